//! Red team against the owner's limits: what a coordinator may ask of an
//! agent's machine and data beyond training — metrics, work, requests that
//! training would refuse — and what one budget covers.
#![allow(clippy::unwrap_used)]

use crate::common::*;

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
            baseline: None,
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
                adaptive_sparsity: false,
                deadline_ms: None,
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
    assert!(OwnerPolicy::from_toml("max_update_bytes = 10").is_err());
    assert_eq!(
        OwnerPolicy::from_toml("max_update_bytes = 5000000")
            .unwrap()
            .max_update_bytes,
        Some(5_000_000)
    );
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
    // Once the agent-wide ledger has spent, going back to per-dataset
    // ledgers (which would not see it) is refused, and one lock covers the
    // directory whatever the scope.
    assert!(matches!(
        ask(&mut a, &shape, 1, 2, Some(dp(2.0))),
        ToCoordinator::Trained(_)
    ));
    assert!(OwnerLedger::open(dir.path(), exact.ledger_key(&d)).is_err());
    drop(a);
    let err = OwnerLedger::open(dir.path(), exact.ledger_key(&d)).unwrap_err();
    assert!(err.contains("agent-wide"), "{err}");
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
        adaptive_sparsity: false,
        deadline_ms: None,
    };
    // The right layout and value count, but one tensor holds a value of its
    // neighbour's.
    let mut uneven = good.clone();
    {
        let mut t: Vec<tg_types::NamedTensor> = uneven.tensors().to_vec();
        let moved = t[0].data.pop().unwrap();
        t[1].data.push(moved);
        uneven = serde_json::from_value(serde_json::json!({ "tensors": t })).unwrap();
    }
    let cases = [
        (uneven, config(0.1, 16), LocalObjective::Plain),
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

#[test]
fn planted_ledger_files_are_refused_not_trusted() {
    use tg_agent::policy::AGENT_LEDGER;
    let d = data();
    let policy = OwnerPolicy {
        budget: Some(Budget {
            epsilon: 50.0,
            delta: 1e-5,
        }),
        ..plaintext_ok()
    };
    let key = policy.ledger_key(&d);
    let name = format!("privacy-ledger-{AGENT_LEDGER}.json");
    let delta = tg_privacy::Delta::new(1e-5).unwrap();
    // Spend once so there is a real ledger to tamper with.
    let dir = tempfile::tempdir().unwrap();
    let real = {
        let (mut a, shape) = agent(
            policy.clone(),
            OwnerLedger::open(dir.path(), key.clone()).unwrap(),
        );
        assert!(matches!(
            ask(&mut a, &shape, 1, 1, Some(dp(2.0))),
            ToCoordinator::Trained(_)
        ));
        std::fs::read_to_string(dir.path().join(&name)).unwrap()
    };
    // A negative RDP value would hand spent budget back.
    let json: serde_json::Value = serde_json::from_str(&real).unwrap();
    let mut negative = json.clone();
    for r in negative["rdp"].as_array_mut().unwrap() {
        *r = serde_json::json!(-1000.0);
    }
    std::fs::write(dir.path().join(&name), negative.to_string()).unwrap();
    let err = OwnerLedger::open(dir.path(), key.clone()).unwrap_err();
    assert!(err.contains("altered"), "{err}");
    // A link to another file (here one that says nothing was spent), and a
    // device, are refused rather than followed or read forever.
    let elsewhere = tempfile::tempdir().unwrap();
    let fresh = elsewhere.path().join("fresh.json");
    let mut zero = json.clone();
    for r in zero["rdp"].as_array_mut().unwrap() {
        *r = serde_json::json!(0.0);
    }
    zero["trained"] = serde_json::json!([]);
    std::fs::write(&fresh, zero.to_string()).unwrap();
    for target in [fresh.as_path(), std::path::Path::new("/dev/zero")] {
        std::fs::remove_file(dir.path().join(&name)).unwrap();
        std::os::unix::fs::symlink(target, dir.path().join(&name)).unwrap();
        let err = OwnerLedger::open(dir.path(), key.clone()).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
    }
    // A pipe is refused at once, not waited on.
    std::fs::remove_file(dir.path().join(&name)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.path().join(&name),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
    let err = OwnerLedger::open(dir.path(), key.clone()).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    // The real ledger back: it opens, with what was spent.
    std::fs::remove_file(dir.path().join(&name)).unwrap();
    std::fs::write(dir.path().join(&name), &real).unwrap();
    let (mut a, shape) = agent(policy, OwnerLedger::open(dir.path(), key).unwrap());
    assert!(a.ledger().epsilon(delta) > 0.0);
    // A link planted at the temporary name is not written through.
    let victim = elsewhere.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join(format!("{name}.tmp"))).unwrap();
    assert!(matches!(
        ask(&mut a, &shape, 1, 2, Some(dp(2.0))),
        ToCoordinator::Trained(_)
    ));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
}

#[test]
fn an_update_that_could_never_fit_the_envelope_is_refused_before_it_is_charged() {
    let d = data();
    let ledger = || OwnerLedger::in_memory(tg_agent::policy::fingerprint(&d));
    let train = |a: &mut Agent, shape: &ModelShape, round: u32, adaptive: bool| {
        let req = ToAgent::Train(TrainRequest {
            at: RoundRef {
                job: JobId::from_bytes([9; 16]),
                round,
            },
            global: tg_model::init_parameters(shape, 0).unwrap(),
            config: TrainConfig {
                local_epochs: 1,
                batch_size: 16,
                learning_rate: 0.1,
                optimizer: OptimizerSpec::Sgd,
                dp_sgd: Some(dp(2.0)),
                compress: Default::default(),
                adaptive_sparsity: adaptive,
                deadline_ms: Some(60_000),
            },
            objective: LocalObjective::Plain,
            secure: None,
        });
        let Handled::Reply(frame) = a.handle_frame(&tg_proto::encode(&req).unwrap()).unwrap()
        else {
            panic!()
        };
        tg_proto::decode::<ToCoordinator>(&frame).unwrap()
    };
    let (mut a, shape) = agent(
        OwnerPolicy {
            max_update_bytes: Some(2048),
            ..plaintext_ok()
        },
        ledger(),
    );
    assert!(tg_model::init_parameters(&shape, 0).unwrap().num_values() * 4 > 2048);
    // Dense and not to be sparsified: refused before training or charging.
    let reply = train(&mut a, &shape, 1, false);
    assert_eq!(declined(&reply), Some(DeclineReason::OwnerFloor));
    let delta = tg_privacy::Delta::new(1e-5).unwrap();
    assert_eq!(a.ledger().epsilon(delta), 0.0, "nothing was charged");
    // The same round where sparsifying is allowed: trained, charged, and
    // sent as top-k within the budget.
    let reply = train(&mut a, &shape, 2, true);
    let ToCoordinator::Trained(r) = &reply else {
        panic!("{reply:?}")
    };
    assert!(r.compressed.is_some() && r.update.num_values() == 0);
    assert!(tg_proto::encode(&reply).unwrap().len() <= 2048);
    assert!(a.ledger().epsilon(delta) > 0.0);
}
