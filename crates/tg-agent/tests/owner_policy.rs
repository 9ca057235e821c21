//! Red team against the data owner's policy: a coordinator that replays a
//! round, drops privacy from the offer, lowers the noise, or starts a fresh
//! job to reset the budget. The agent refuses each with a specific code, and
//! its ledger survives restarts.
#![allow(clippy::unwrap_used)]

use tg_agent::{Agent, Budget, Handled, OwnerLedger, OwnerPolicy};
use tg_model::ModelShape;
use tg_privacy::{ClipNorm, NoiseMultiplier, SamplingRate};
use tg_proto::{DeclineReason, RoundRef, ToAgent, ToCoordinator, TrainRequest};
use tg_types::privacy::DpSgdSpec;
use tg_types::spec::{LocalObjective, ModelKind, OptimizerSpec, TrainConfig};
use tg_types::{AgentId, JobId};

fn data() -> tg_model::Dataset {
    tg_model::dataset::digits()
        .unwrap()
        .subset(&(0..64).collect::<Vec<_>>())
}

fn agent(policy: OwnerPolicy, ledger: OwnerLedger) -> (Agent, ModelShape) {
    let d = data();
    let shape = ModelShape::for_dataset(ModelKind::Mlp, 8, &d).unwrap();
    let a = Agent::new(AgentId::numbered(0), shape, &d, 1)
        .unwrap()
        .with_owner(policy, ledger);
    (a, shape)
}

fn dp(sigma: f64) -> DpSgdSpec {
    DpSgdSpec {
        noise_multiplier: NoiseMultiplier::new(sigma).unwrap(),
        max_grad_norm: ClipNorm::new(1.0).unwrap(),
        sampling_rate: SamplingRate::new(0.25).unwrap(),
        steps_per_round: 4,
    }
}

fn ask(
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

fn declined(r: &ToCoordinator) -> Option<DeclineReason> {
    match r {
        ToCoordinator::Declined { reason, .. } => Some(*reason),
        _ => None,
    }
}

fn plaintext_ok() -> OwnerPolicy {
    OwnerPolicy {
        allow_plaintext: true,
        ..OwnerPolicy::default()
    }
}

#[test]
fn a_replayed_round_is_never_trained_twice() {
    let d = data();
    let (mut a, shape) = agent(
        OwnerPolicy::permissive(),
        OwnerLedger::in_memory(tg_agent::policy::fingerprint(&d)),
    );
    assert!(matches!(
        ask(&mut a, &shape, 1, 1, Some(dp(1.0))),
        ToCoordinator::Trained(_)
    ));
    // The same round again (fresh noise would average the old away).
    assert_eq!(
        declined(&ask(&mut a, &shape, 1, 1, Some(dp(1.0)))),
        Some(DeclineReason::RoundReplayed)
    );
}

#[test]
fn an_offer_without_privacy_gets_no_plaintext_training_by_default() {
    let d = data();
    let fp = tg_agent::policy::fingerprint(&d);
    let (mut a, shape) = agent(OwnerPolicy::default(), OwnerLedger::in_memory(fp.clone()));
    assert_eq!(
        declined(&ask(&mut a, &shape, 1, 1, None)),
        Some(DeclineReason::PlaintextRefused)
    );
    let (mut a, shape) = agent(plaintext_ok(), OwnerLedger::in_memory(fp.clone()));
    assert!(matches!(
        ask(&mut a, &shape, 1, 1, None),
        ToCoordinator::Trained(_)
    ));
    // With a budget, a round without DP noise has ε = ∞: refused.
    let budgeted = OwnerPolicy {
        budget: Some(Budget {
            epsilon: 5.0,
            delta: 1e-5,
        }),
        ..plaintext_ok()
    };
    let (mut a, shape) = agent(budgeted, OwnerLedger::in_memory(fp));
    assert_eq!(
        declined(&ask(&mut a, &shape, 1, 1, None)),
        Some(DeclineReason::PrivacyBudgetExhausted)
    );
}

#[test]
fn lowered_noise_is_below_the_owners_cap() {
    let d = data();
    let capped = OwnerPolicy {
        max_round_epsilon: Some(1.0),
        ..plaintext_ok()
    };
    let (mut a, shape) = agent(
        capped,
        OwnerLedger::in_memory(tg_agent::policy::fingerprint(&d)),
    );
    assert!(matches!(
        ask(&mut a, &shape, 1, 1, Some(dp(3.0))),
        ToCoordinator::Trained(_)
    ));
    assert_eq!(
        declined(&ask(&mut a, &shape, 1, 2, Some(dp(0.3)))),
        Some(DeclineReason::OwnerFloor)
    );
}

#[test]
fn a_fresh_job_id_does_not_reset_the_budget_nor_does_a_restart() {
    let d = data();
    let fp = tg_agent::policy::fingerprint(&d);
    let dir = tempfile::tempdir().unwrap();
    let policy = OwnerPolicy {
        budget: Some(Budget {
            epsilon: 2.0,
            delta: 1e-5,
        }),
        ..plaintext_ok()
    };
    let (mut a, shape) = agent(
        policy.clone(),
        OwnerLedger::open(dir.path(), fp.clone()).unwrap(),
    );
    let mut trained = 0;
    for round in 1..=50 {
        match ask(&mut a, &shape, 1, round, Some(dp(2.0))) {
            ToCoordinator::Trained(_) => trained += 1,
            r => {
                assert_eq!(declined(&r), Some(DeclineReason::PrivacyBudgetExhausted));
                break;
            }
        }
    }
    assert!(
        (1..50).contains(&trained),
        "{trained} rounds fit the budget"
    );
    let spent = a.ledger().epsilon(tg_privacy::Delta::new(1e-5).unwrap());
    assert!(spent > 0.0 && spent <= 4.0, "{spent}");
    // The coordinator restarts the agent's job under a new id: the ledger
    // is the dataset's, read back from disk.
    let (mut b, shape) = agent(policy, OwnerLedger::open(dir.path(), fp).unwrap());
    assert_eq!(
        b.ledger().epsilon(tg_privacy::Delta::new(1e-5).unwrap()),
        spent
    );
    assert_eq!(
        declined(&ask(&mut b, &shape, 2, 1, Some(dp(2.0)))),
        Some(DeclineReason::PrivacyBudgetExhausted)
    );
}

#[test]
fn policy_files_are_parsed_strictly() {
    let p = OwnerPolicy::from_toml(
        "allow_plaintext = false\nmax_round_epsilon = 0.5\n[budget]\nepsilon = 8\ndelta = 1e-6\n\
         [secure_aggregation]\nmin_participants = 20\nassumed_corrupt = 0.1\n",
    )
    .unwrap();
    assert_eq!(p.secure_aggregation.min_participants, 20);
    assert_eq!(p.budget.unwrap().epsilon, 8.0);
    assert!(OwnerPolicy::from_toml("allow_plaintxt = true").is_err());
    assert!(OwnerPolicy::from_toml("[budget]\nepsilon = -1\ndelta = 1e-5").is_err());
    assert!(OwnerPolicy::from_toml("[budget]\nepsilon = 1\ndelta = 2").is_err());
    assert_eq!(OwnerPolicy::from_toml("").unwrap(), OwnerPolicy::default());
}
