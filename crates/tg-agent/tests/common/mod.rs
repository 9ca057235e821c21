//! Helpers shared by the owner-policy red-team tests.
#![allow(clippy::unwrap_used, dead_code, unused_imports)]

pub use tg_agent::{Agent, Budget, Handled, OwnerLedger, OwnerPolicy};
pub use tg_model::ModelShape;
pub use tg_privacy::{ClipNorm, NoiseMultiplier, SamplingRate};
pub use tg_proto::{DeclineReason, RoundRef, ToAgent, ToCoordinator, TrainRequest};
pub use tg_types::privacy::DpSgdSpec;
pub use tg_types::spec::{LocalObjective, ModelKind, OptimizerSpec, TrainConfig};
pub use tg_types::{AgentId, JobId};

pub fn data() -> tg_model::Dataset {
    tg_model::dataset::digits()
        .unwrap()
        .subset(&(0..64).collect::<Vec<_>>())
}

pub fn agent(policy: OwnerPolicy, ledger: OwnerLedger) -> (Agent, ModelShape) {
    let d = data();
    let shape = ModelShape::for_dataset(ModelKind::Mlp, 8, &d).unwrap();
    let a = Agent::new(AgentId::numbered(0), shape, &d, 1)
        .unwrap()
        .with_owner(policy, ledger);
    (a, shape)
}

pub fn dp(sigma: f64) -> DpSgdSpec {
    DpSgdSpec {
        noise_multiplier: NoiseMultiplier::new(sigma).unwrap(),
        max_grad_norm: ClipNorm::new(1.0).unwrap(),
        sampling_rate: SamplingRate::new(0.25).unwrap(),
        steps_per_round: 4,
    }
}

pub fn ask(
    agent: &mut Agent,
    shape: &ModelShape,
    job: u8,
    round: u32,
    dp_sgd: Option<DpSgdSpec>,
) -> ToCoordinator {
    let req = ToAgent::Train(TrainRequest {
        at: RoundRef {
            job: JobId::from_bytes([job; 16]),
            round,
        },
        global: tg_model::init_parameters(shape, 0).unwrap(),
        config: TrainConfig {
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 0.1,
            optimizer: OptimizerSpec::Sgd,
            dp_sgd,
            compress: Default::default(),
            adaptive_sparsity: false,
            deadline_ms: None,
        },
        objective: LocalObjective::Plain,
        secure: None,
    });
    let Handled::Reply(frame) = agent
        .handle_frame(&tg_proto::encode(&req).unwrap())
        .unwrap()
    else {
        panic!()
    };
    tg_proto::decode::<ToCoordinator>(&frame).unwrap()
}

pub fn declined(r: &ToCoordinator) -> Option<DeclineReason> {
    match r {
        ToCoordinator::Declined { reason, .. } => Some(*reason),
        _ => None,
    }
}

pub fn plaintext_ok() -> OwnerPolicy {
    OwnerPolicy {
        allow_plaintext: true,
        ..OwnerPolicy::default()
    }
}
