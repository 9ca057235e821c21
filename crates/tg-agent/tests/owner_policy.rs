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
            compress: Default::default(),
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
    // A second agent on the same data directory cannot take the ledger.
    assert!(OwnerLedger::open(dir.path(), fp.clone()).is_err());
    drop(a);
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

#[test]
fn a_round_with_an_uncertified_or_foreign_identity_is_refused() {
    use ed25519_dalek::SigningKey;
    use tg_agent::policy::judge_round;
    use tg_proto::{Certificate, SecureRound};

    let root = SigningKey::from_bytes(&[42; 32]);
    let coordinators_own = SigningKey::from_bytes(&[43; 32]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = RoundRef {
        job: JobId::from_bytes([5; 16]),
        round: 1,
    };
    let members: Vec<(AgentId, [u8; 32])> = (0..6u8)
        .map(|i| {
            (
                AgentId::numbered(usize::from(i)),
                SigningKey::from_bytes(&[i + 1; 32])
                    .verifying_key()
                    .to_bytes(),
            )
        })
        .collect();
    let cert = |by: &SigningKey, key: [u8; 32], until: u64| {
        Certificate::issue(by, key, "robot", now - 10, until)
    };
    let d = data();
    let shape = ModelShape::for_dataset(ModelKind::Mlp, 8, &d).unwrap();
    let request = |certificates: Vec<Certificate>| TrainRequest {
        at,
        global: tg_model::init_parameters(&shape, 0).unwrap(),
        config: TrainConfig {
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 0.1,
            optimizer: OptimizerSpec::Sgd,
            dp_sgd: None,
            compress: Default::default(),
        },
        objective: LocalObjective::Plain,
        secure: Some(Box::new(SecureRound {
            participants: members.clone(),
            certificates,
            bits: 20,
            clip: 1.0,
            corrupt: 0.05,
            dropout: 0.1,
            rotation_seed: [1; 32],
            weight_scale: None,
            keep_fraction: None,
            local_noise_variance: None,
            max_clients: None,
            min_survivors: None,
            scale: None,
            prg: tg_secagg::crypto::Prg::default(),
        })),
    };
    let policy = OwnerPolicy {
        fleet_root: Some(
            root.verifying_key()
                .to_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        ),
        ..OwnerPolicy::default()
    };
    let ledger = OwnerLedger::in_memory(tg_agent::policy::fingerprint(&d));
    let params = tg_model::init_parameters(&shape, 0).unwrap().num_values();
    let judge = |certs: Vec<Certificate>| {
        judge_round(&policy, &ledger, &request(certs), params).map(|_| ())
    };
    let all: Vec<Certificate> = members
        .iter()
        .map(|(_, k)| cert(&root, *k, now + 3600))
        .collect();
    assert!(judge(all.clone()).is_ok());
    // No certificates at all (a coordinator that drops them).
    assert_eq!(
        judge(Vec::new()).unwrap_err().0,
        DeclineReason::UncertifiedParticipant
    );
    // A Sybil certified by the coordinator's own "root".
    let mut sybil = all.clone();
    sybil[3] = cert(&coordinators_own, members[3].1, now + 3600);
    assert_eq!(
        judge(sybil).unwrap_err().0,
        DeclineReason::UncertifiedParticipant
    );
    // Another participant's certificate on a Sybil's seat.
    let mut swapped = all.clone();
    swapped.swap(1, 2);
    assert_eq!(
        judge(swapped).unwrap_err().0,
        DeclineReason::UncertifiedParticipant
    );
    // An expired certificate.
    let mut old = all;
    old[0] = cert(&root, members[0].1, now - 1);
    assert_eq!(
        judge(old).unwrap_err().0,
        DeclineReason::UncertifiedParticipant
    );
}

#[test]
fn evaluation_is_refused_by_default_and_a_malformed_round_costs_no_budget() {
    use tg_proto::EvaluateRequest;
    let d = data();
    let (mut a, shape) = agent(
        OwnerPolicy {
            budget: Some(Budget {
                epsilon: 50.0,
                delta: 1e-5,
            }),
            ..plaintext_ok()
        },
        OwnerLedger::in_memory(tg_agent::policy::fingerprint(&d)),
    );
    // Metrics on local data from a model the coordinator crafted: withheld.
    let eval = ToAgent::Evaluate(EvaluateRequest {
        at: RoundRef {
            job: JobId::from_bytes([1; 16]),
            round: 1,
        },
        model: tg_model::init_parameters(&shape, 0).unwrap(),
    });
    let Handled::Reply(frame) = a.handle_frame(&tg_proto::encode(&eval).unwrap()).unwrap() else {
        panic!()
    };
    assert_eq!(
        declined(&tg_proto::decode::<ToCoordinator>(&frame).unwrap()),
        Some(DeclineReason::MetricsWithheld)
    );
    // A request with a model of the wrong shape is refused before any charge…
    let bad = ToAgent::Train(TrainRequest {
        at: RoundRef {
            job: JobId::from_bytes([1; 16]),
            round: 1,
        },
        global: tg_types::Parameters::default(),
        config: TrainConfig {
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 0.1,
            optimizer: OptimizerSpec::Sgd,
            dp_sgd: Some(dp(2.0)),
            compress: Default::default(),
        },
        objective: LocalObjective::Plain,
        secure: None,
    });
    let Handled::Reply(frame) = a.handle_frame(&tg_proto::encode(&bad).unwrap()).unwrap() else {
        panic!()
    };
    assert_eq!(
        declined(&tg_proto::decode::<ToCoordinator>(&frame).unwrap()),
        Some(DeclineReason::TrainingFailed)
    );
    let delta = tg_privacy::Delta::new(1e-5).unwrap();
    assert_eq!(a.ledger().epsilon(delta), 0.0);
    // …and does not burn the round: the well-formed one still runs.
    assert!(matches!(
        ask(&mut a, &shape, 1, 1, Some(dp(2.0))),
        ToCoordinator::Trained(_)
    ));
    assert!(a.ledger().epsilon(delta) > 0.0);
}

#[test]
fn a_malicious_coordinator_gets_no_metrics_from_a_dp_job_and_one_evaluation_per_round() {
    use tg_proto::EvaluateRequest;
    let d = data();
    let ask_eval = |a: &mut Agent, shape: &ModelShape, round: u32| {
        let eval = ToAgent::Evaluate(EvaluateRequest {
            at: RoundRef {
                job: JobId::from_bytes([1; 16]),
                round,
            },
            model: tg_model::init_parameters(shape, u64::from(round)).unwrap(),
        });
        let Handled::Reply(frame) = a.handle_frame(&tg_proto::encode(&eval).unwrap()).unwrap()
        else {
            panic!()
        };
        declined(&tg_proto::decode::<ToCoordinator>(&frame).unwrap())
    };
    let allow = OwnerPolicy {
        allow_evaluation: true,
        ..plaintext_ok()
    };
    let ledger = || OwnerLedger::in_memory(tg_agent::policy::fingerprint(&d));
    // The owner allows metrics, but the job is private (distributed or
    // central DP: no DP-SGD guard on the agent): withheld, every time.
    let (a, shape) = agent(allow.clone(), ledger());
    let mut a = a.with_private_job(true);
    for round in 1..=3 {
        assert_eq!(
            ask_eval(&mut a, &shape, round),
            Some(DeclineReason::MetricsWithheld)
        );
    }
    // A dataset under a per-round cap: withheld too.
    let capped = OwnerPolicy {
        max_round_epsilon: Some(1.0),
        ..allow.clone()
    };
    let (mut a, shape) = agent(capped, ledger());
    assert_eq!(
        ask_eval(&mut a, &shape, 1),
        Some(DeclineReason::MetricsWithheld)
    );
    // A plaintext job the owner allows: one answer per round, in order;
    // asking again for the same or an earlier round gets nothing new.
    let (mut a, shape) = agent(allow, ledger());
    assert_eq!(ask_eval(&mut a, &shape, 2), None);
    assert_eq!(
        ask_eval(&mut a, &shape, 2),
        Some(DeclineReason::MetricsWithheld)
    );
    assert_eq!(
        ask_eval(&mut a, &shape, 1),
        Some(DeclineReason::MetricsWithheld)
    );
    assert_eq!(ask_eval(&mut a, &shape, 3), None);
}

#[test]
fn a_coordinator_cannot_ask_for_more_work_than_the_owner_allows() {
    let d = data();
    let ledger = || OwnerLedger::in_memory(tg_agent::policy::fingerprint(&d));
    let train = |a: &mut Agent, shape: &ModelShape, round: u32, epochs: u32, dp_sgd| {
        let req = ToAgent::Train(TrainRequest {
            at: RoundRef {
                job: JobId::from_bytes([9; 16]),
                round,
            },
            global: tg_model::init_parameters(shape, 0).unwrap(),
            config: TrainConfig {
                local_epochs: epochs,
                batch_size: 16,
                learning_rate: 0.1,
                optimizer: OptimizerSpec::Sgd,
                dp_sgd,
                compress: Default::default(),
            },
            objective: LocalObjective::Plain,
            secure: None,
        });
        let Handled::Reply(frame) = a.handle_frame(&tg_proto::encode(&req).unwrap()).unwrap()
        else {
            panic!()
        };
        declined(&tg_proto::decode::<ToCoordinator>(&frame).unwrap())
    };
    // The default limits: a billion epochs, or steps, are refused before
    // any work or any charge.
    let (mut a, shape) = agent(plaintext_ok(), ledger());
    assert_eq!(
        train(&mut a, &shape, 1, 1_000_000_000, None),
        Some(DeclineReason::OwnerFloor)
    );
    let mut steps = dp(2.0);
    steps.steps_per_round = u32::MAX;
    assert_eq!(
        train(&mut a, &shape, 2, 1, Some(steps)),
        Some(DeclineReason::OwnerFloor)
    );
    // Steps within the step cap, but each over every example: 100,000
    // steps at rate 1 is 100,000 epochs of work.
    let mut whole = dp(2.0);
    whole.sampling_rate = SamplingRate::new(1.0).unwrap();
    whole.steps_per_round = 100_000;
    assert_eq!(
        train(&mut a, &shape, 3, 1, Some(whole)),
        Some(DeclineReason::OwnerFloor)
    );
    let delta = tg_privacy::Delta::new(1e-5).unwrap();
    assert_eq!(a.ledger().epsilon(delta), 0.0, "nothing was charged");
    // An owner's own limit.
    let (mut a, shape) = agent(
        OwnerPolicy {
            max_local_epochs: Some(2),
            ..plaintext_ok()
        },
        ledger(),
    );
    assert_eq!(
        train(&mut a, &shape, 1, 3, None),
        Some(DeclineReason::OwnerFloor)
    );
    assert_eq!(train(&mut a, &shape, 2, 2, None), None);
    // Policy files refuse a zero limit.
    assert!(OwnerPolicy::from_toml("max_local_epochs = 0").is_err());
}

#[test]
fn one_more_record_or_another_shard_does_not_start_a_fresh_budget() {
    use tg_agent::policy::BudgetScope;
    let d = data();
    let more = tg_model::dataset::digits()
        .unwrap()
        .subset(&(0..65).collect::<Vec<_>>());
    let dir = tempfile::tempdir().unwrap();
    let policy = OwnerPolicy {
        budget: Some(Budget {
            epsilon: 50.0,
            delta: 1e-5,
        }),
        ..plaintext_ok()
    };
    // The default scope: the agent's whole data directory, whatever it serves.
    assert_eq!(policy.ledger_key(&d), policy.ledger_key(&more));
    let exact = OwnerPolicy {
        budget_scope: BudgetScope::Dataset,
        ..policy.clone()
    };
    assert_ne!(exact.ledger_key(&d), exact.ledger_key(&more));
    // Spend under the exact-content scope (as earlier versions did)…
    let delta = tg_privacy::Delta::new(1e-5).unwrap();
    let spent = {
        let (mut a, shape) = agent(
            exact.clone(),
            OwnerLedger::open(dir.path(), exact.ledger_key(&d)).unwrap(),
        );
        assert!(matches!(
            ask(&mut a, &shape, 1, 1, Some(dp(2.0))),
            ToCoordinator::Trained(_)
        ));
        a.ledger().epsilon(delta)
    };
    assert!(spent > 0.0);
    // …then the agent-wide ledger starts from it, round and all: moving to
    // the default scope never resets a budget or lets a round run twice.
    let (mut a, shape) = agent(
        policy.clone(),
        OwnerLedger::open(dir.path(), policy.ledger_key(&more)).unwrap(),
    );
    assert!((a.ledger().epsilon(delta) - spent).abs() < 1e-9);
    assert_eq!(
        declined(&ask(&mut a, &shape, 1, 1, Some(dp(2.0)))),
        Some(DeclineReason::RoundReplayed)
    );
}

#[test]
fn a_request_training_would_refuse_is_refused_before_it_is_charged() {
    let d = data();
    let policy = OwnerPolicy {
        budget: Some(Budget {
            epsilon: 50.0,
            delta: 1e-5,
        }),
        ..plaintext_ok()
    };
    let (mut a, shape) = agent(
        policy,
        OwnerLedger::in_memory(tg_agent::policy::fingerprint(&d)),
    );
    let good = tg_model::init_parameters(&shape, 0).unwrap();
    // The same number of values under other names.
    let renamed = tg_types::Parameters::new(
        good.tensors()
            .iter()
            .map(|t| tg_types::NamedTensor {
                name: format!("x.{}", t.name),
                ..t.clone()
            })
            .collect(),
    )
    .unwrap();
    let config = |lr: f64, batch: u32| TrainConfig {
        local_epochs: 1,
        batch_size: batch,
        learning_rate: lr,
        optimizer: OptimizerSpec::Sgd,
        dp_sgd: Some(dp(2.0)),
        compress: Default::default(),
    };
    let cases = [
        (renamed.clone(), config(0.1, 16), LocalObjective::Plain),
        (good.clone(), config(0.1, 0), LocalObjective::Plain),
        (good.clone(), config(-1.0, 16), LocalObjective::Plain),
        (good.clone(), config(f64::NAN, 16), LocalObjective::Plain),
        (
            good.clone(),
            config(0.1, 16),
            LocalObjective::Scaffold {
                server_control: renamed,
            },
        ),
    ];
    for (round, (global, config, objective)) in (1..).zip(cases) {
        let req = ToAgent::Train(TrainRequest {
            at: RoundRef {
                job: JobId::from_bytes([3; 16]),
                round,
            },
            global,
            config,
            objective,
            secure: None,
        });
        let Handled::Reply(frame) = a.handle_frame(&tg_proto::encode(&req).unwrap()).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            declined(&tg_proto::decode::<ToCoordinator>(&frame).unwrap()),
            Some(DeclineReason::TrainingFailed),
            "round {round}"
        );
    }
    let delta = tg_privacy::Delta::new(1e-5).unwrap();
    assert_eq!(a.ledger().epsilon(delta), 0.0, "nothing was charged");
    // And none of those rounds counts as trained: a well-formed request
    // for round 1 still runs.
    assert!(matches!(
        ask(&mut a, &shape, 3, 1, Some(dp(2.0))),
        ToCoordinator::Trained(_)
    ));
}
