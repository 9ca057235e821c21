//! The airlock: what leaves an agent is model updates, the declared metrics,
//! fixed decline codes and attestation evidence — never its data. Every
//! message type an agent can send is exercised here over data carrying a
//! canary, and no frame may contain any run of the data's bytes.
#![allow(clippy::unwrap_used)]

use tg_agent::{Agent, Handled};
use tg_model::Dataset;
use tg_model::net::ModelShape;
use tg_proto::{EvaluateRequest, RoundRef, ToAgent, TrainRequest};
use tg_types::spec::{LocalObjective, ModelKind, OptimizerSpec, TrainConfig};
use tg_types::{AgentId, JobId, Parameters};

/// Digits with every feature shifted by a canary offset, so no feature is a
/// value (like 0.0) that a model update could contain by coincidence.
fn canary_data() -> Dataset {
    let digits = tg_model::dataset::digits()
        .unwrap()
        .subset(&(0..120).collect::<Vec<_>>());
    let features: Vec<f32> = digits.features().iter().map(|x| x + 0.123_456_7).collect();
    Dataset::new(
        features,
        digits.labels().to_vec(),
        digits.num_features(),
        digits.num_classes(),
        None,
    )
    .unwrap()
}

/// Every 16-byte run (4 consecutive features) of every example.
fn needles(data: &Dataset) -> Vec<[u8; 16]> {
    let bytes: Vec<u8> = data
        .features()
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let row = data.num_features() * 4;
    let mut out = Vec::new();
    for r in bytes.chunks(row) {
        for w in r.windows(16).step_by(4) {
            out.push(w.try_into().unwrap());
        }
    }
    out
}

fn outbound(agent: &mut Agent, msg: &ToAgent) -> Vec<u8> {
    match agent.handle_frame(&tg_proto::encode(msg).unwrap()).unwrap() {
        Handled::Reply(frame) => frame,
        other => panic!("{other:?}"),
    }
}

#[test]
fn no_outbound_frame_carries_dataset_bytes() {
    let data = canary_data();
    let shape = ModelShape::for_dataset(ModelKind::Mlp, 16, &data).unwrap();
    let mut agent = Agent::new(AgentId::numbered(0), shape, &data, 7).unwrap();
    let at = |round| RoundRef {
        job: JobId::from_bytes([3; 16]),
        round,
    };
    let config = TrainConfig {
        local_epochs: 2,
        batch_size: 16,
        learning_rate: 0.1,
        optimizer: OptimizerSpec::Sgd,
        dp_sgd: None,
        compress: Default::default(),
        adaptive_sparsity: false,
        deadline_ms: None,
    };
    let global = tg_model::init_parameters(&shape, 1).unwrap();
    let mut frames = Vec::new();
    for objective in [LocalObjective::Plain, LocalObjective::Proximal { mu: 0.1 }] {
        frames.push(outbound(
            &mut agent,
            &ToAgent::Train(TrainRequest {
                at: at(1),
                global: global.clone(),
                config,
                objective,
                secure: None,
            }),
        ));
    }
    frames.push(outbound(
        &mut agent,
        &ToAgent::Evaluate(EvaluateRequest {
            at: at(1),
            model: global.clone(),
            baseline: None,
        }),
    ));
    // A request the agent must decline: the reply is a code, not an error text.
    frames.push(outbound(
        &mut agent,
        &ToAgent::Train(TrainRequest {
            at: at(2),
            global: Parameters::default(),
            config,
            objective: LocalObjective::Plain,
            secure: None,
        }),
    ));
    let declined = tg_proto::decode::<tg_proto::ToCoordinator>(frames.last().unwrap()).unwrap();
    assert!(matches!(
        declined,
        tg_proto::ToCoordinator::Declined {
            reason: tg_proto::DeclineReason::TrainingFailed,
            ..
        }
    ));

    let needles = needles(&data);
    assert!(needles.len() > 1000);
    for (i, f) in frames.iter().enumerate() {
        for n in &needles {
            assert!(
                !f.windows(16).any(|w| w == n),
                "frame {i} contains 16 bytes of the local dataset"
            );
        }
    }
}
