//! A learner is outside code: the agent checks what it asks of it before
//! anything is charged, and what it returns before anything leaves.

#![allow(clippy::unwrap_used)]

use crate::common;

use crate::common::*;
use tg_agent::{Capabilities, Learner, Round};
use tg_model::{Evaluation, LocalOutcome};
use tg_types::Parameters;

/// A learner that returns whatever the test scripted, and counts its calls.
struct Scripted {
    layout: Vec<(String, Vec<usize>)>,
    reply: fn(&Parameters) -> Parameters,
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Learner for Scripted {
    fn layout(&self) -> Vec<(String, Vec<usize>)> {
        self.layout.clone()
    }
    fn num_examples(&self) -> usize {
        7
    }
    fn train(&mut self, round: &Round<'_>) -> Result<LocalOutcome, String> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(LocalOutcome {
            update: (self.reply)(round.global),
            train_loss: None,
            steps: 1,
            control_delta: None,
        })
    }
    fn evaluate(&mut self, _: &Parameters) -> Result<Evaluation, String> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Evaluation {
            loss: 0.0,
            accuracy: 1.0,
            num_examples: 7,
        })
    }
}

fn scripted(
    reply: fn(&Parameters) -> Parameters,
) -> (
    Agent,
    ModelShape,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let d = data();
    let shape = ModelShape::for_dataset(ModelKind::Mlp, 8, &d).unwrap();
    let layout = tg_model::init_parameters(&shape, 0)
        .unwrap()
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let learner = Scripted {
        layout,
        reply,
        calls: calls.clone(),
    };
    let agent = Agent::with_learner(AgentId::numbered(0), Box::new(learner), 1, "scripted")
        .with_owner(
            OwnerPolicy {
                allow_evaluation: true,
                ..plaintext_ok()
            },
            OwnerLedger::in_memory("scripted".into()),
        );
    (agent, shape, calls)
}

#[test]
fn an_update_with_nan_or_another_layout_never_leaves() {
    let nan = |g: &Parameters| {
        let mut p = g.clone();
        p.add_scaled(g, f32::NAN).unwrap();
        p
    };
    let (mut agent, shape, _) = scripted(nan);
    assert_eq!(
        declined(&ask(&mut agent, &shape, 1, 1, None)),
        Some(DeclineReason::TrainingFailed)
    );
    let (mut agent, shape, _) = scripted(|_| Parameters::default());
    assert_eq!(
        declined(&ask(&mut agent, &shape, 1, 1, None)),
        Some(DeclineReason::TrainingFailed)
    );
    // A well-formed update goes out, weighted by the learner's count.
    let (mut agent, shape, _) = scripted(|g| g.clone());
    match ask(&mut agent, &shape, 1, 1, None) {
        ToCoordinator::Trained(r) => assert_eq!(r.num_examples, 7),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_round_the_learner_cannot_honour_is_refused_before_it_is_charged() {
    assert!(!Capabilities::plain().dp_sgd());
    let (mut agent, shape, calls) = scripted(|g| g.clone());
    // DP-SGD asked of a learner without it: declined, the learner never
    // called, and the owner's ledger untouched (the round can still run).
    let r = ask(&mut agent, &shape, 1, 1, Some(dp(1.0)));
    assert_eq!(declined(&r), Some(DeclineReason::TrainingFailed));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    let delta = tg_privacy::Delta::new(1e-5).unwrap();
    assert_eq!(agent.ledger().epsilon(delta), 0.0);
    assert!(matches!(
        ask(&mut agent, &shape, 1, 1, None),
        ToCoordinator::Trained(_)
    ));
}

#[test]
fn a_model_of_another_layout_is_not_evaluated() {
    let (mut agent, _, calls) = scripted(|g| g.clone());
    let req = ToAgent::Evaluate(tg_proto::EvaluateRequest {
        at: RoundRef {
            job: JobId::from_bytes([1; 16]),
            round: 1,
        },
        model: Parameters::default(),
        baseline: None,
    });
    let Handled::Reply(frame) = agent
        .handle_frame(&tg_proto::encode(&req).unwrap())
        .unwrap()
    else {
        panic!()
    };
    let r = tg_proto::decode::<ToCoordinator>(&frame).unwrap();
    assert_eq!(declined(&r), Some(DeclineReason::EvaluationFailed), "{r:?}");
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn the_owner_learns_why_a_round_was_declined_the_coordinator_only_the_code() {
    let (mut agent, shape, _) = scripted(|g| g.clone());
    // A plaintext round, and the owner's default policy refuses plaintext.
    let mut agent_strict = {
        let (a, _) = common::agent(OwnerPolicy::default(), OwnerLedger::in_memory("d".into()));
        a
    };
    let r = ask(&mut agent_strict, &shape, 1, 1, None);
    assert_eq!(declined(&r), Some(DeclineReason::PlaintextRefused));
    let d = agent_strict
        .take_declined()
        .expect("the owner sees the decline");
    assert_eq!((d.round, d.reason), (1, DeclineReason::PlaintextRefused));
    assert!(!d.detail.is_empty());
    assert!(agent_strict.take_declined().is_none(), "taken once");
    // A round trained and sent: nothing declined.
    let r = ask(&mut agent, &shape, 1, 1, None);
    assert_eq!(declined(&r), None, "{r:?}");
    assert!(agent.take_declined().is_none());
}

#[test]
fn the_built_in_learner_refuses_an_operator_model_job_at_the_offer() {
    use tg_agent::LocalTraining;
    let local = tg_agent::CandleTraining::new(data());
    let mut offer = tg_proto::Offer {
        job: JobId::from_bytes([3; 16]),
        model: ModelKind::Mlp,
        hidden: 8,
        train: TrainConfig {
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 0.1,
            optimizer: OptimizerSpec::Sgd,
            dp_sgd: None,
            compress: Default::default(),
            adaptive_sparsity: false,
            deadline_ms: None,
        },
        privacy: None,
        rounds: 1,
        enrollment_required: false,
        attestation_nonce: None,
        schema: None,
        custom_model: false,
        aggregator: None,
    };
    assert!(local.learner(&offer).is_ok());
    offer.custom_model = true;
    assert!(matches!(
        local.learner(&offer),
        Err(tg_agent::AgentError::CustomModel)
    ));
}
