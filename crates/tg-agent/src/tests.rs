//! The agent handler's unit tests: training on request, declining bad models, its own DP budget.

use super::*;
use tg_types::Parameters;
use tg_types::spec::{LocalObjective, ModelKind, OptimizerSpec, TrainConfig};

#[test]
fn trains_on_request_and_declines_bad_models() {
    let data = tg_model::dataset::digits()
        .unwrap()
        .subset(&(0..100).collect::<Vec<_>>());
    let shape = ModelShape::for_dataset(ModelKind::Mlp, 16, &data).unwrap();
    let mut agent = Agent::new(AgentId::numbered(0), shape, &data, 1).unwrap();
    let at = RoundRef {
        job: JobId::from_bytes([0; 16]),
        round: 1,
    };
    let config = TrainConfig {
        local_epochs: 1,
        batch_size: 20,
        learning_rate: 0.1,
        optimizer: OptimizerSpec::Sgd,
        dp_sgd: None,
        compress: Default::default(),
        adaptive_sparsity: false,
        deadline_ms: None,
    };
    let global = tg_model::init_parameters(&shape, 0).unwrap();
    let req = ToAgent::Train(TrainRequest {
        at,
        global,
        config,
        objective: LocalObjective::Plain,
        secure: None,
    });
    let Handled::Reply(frame) = agent
        .handle_frame(&tg_proto::encode(&req).unwrap())
        .unwrap()
    else {
        panic!()
    };
    match tg_proto::decode::<ToCoordinator>(&frame).unwrap() {
        ToCoordinator::Trained(r) => {
            assert_eq!(r.num_examples, 100);
            assert_eq!(r.steps, 5);
        }
        other => panic!("{other:?}"),
    }
    let bad = ToAgent::Train(TrainRequest {
        at,
        global: Parameters::default(),
        config,
        objective: LocalObjective::Plain,
        secure: None,
    });
    let Handled::Reply(frame) = agent
        .handle_frame(&tg_proto::encode(&bad).unwrap())
        .unwrap()
    else {
        panic!()
    };
    assert!(matches!(
        tg_proto::decode::<ToCoordinator>(&frame).unwrap(),
        ToCoordinator::Declined { .. }
    ));
    assert!(agent.handle_frame(b"\x01\x02").is_err());
}

#[test]
fn a_guarded_agent_keeps_its_own_budget() {
    use tg_privacy::{
        AccountantKind, ClipNorm, Delta, Epsilon, GaussianSteps, NoiseMultiplier, SamplingRate,
    };
    use tg_types::privacy::DpSgdSpec;
    let data = tg_model::dataset::digits()
        .unwrap()
        .subset(&(0..64).collect::<Vec<_>>());
    let shape = ModelShape::for_dataset(ModelKind::Mlp, 8, &data).unwrap();
    let dp = DpSgdSpec {
        noise_multiplier: NoiseMultiplier::new(1.0).unwrap(),
        max_grad_norm: ClipNorm::new(1.0).unwrap(),
        sampling_rate: SamplingRate::new(0.25).unwrap(),
        steps_per_round: 4,
    };
    let delta = Delta::new(1e-5).unwrap();
    let step = GaussianSteps {
        sampling_rate: dp.sampling_rate,
        noise_multiplier: dp.noise_multiplier,
        steps: 4,
    };
    let eps = |k: usize| {
        tg_privacy::accountant::epsilon(AccountantKind::Rdp, &vec![step; k], delta).epsilon
    };
    // Room for exactly two rounds.
    let limit = Epsilon::new(0.5 * (eps(2) + eps(3))).unwrap();
    let mut agent = Agent::new(AgentId::numbered(0), shape, &data, 1)
        .unwrap()
        .with_privacy_guard(PrivacyGuard::new(limit, delta, AccountantKind::Rdp));
    let global = tg_model::init_parameters(&shape, 0).unwrap();
    let ask = |agent: &mut Agent, round: u32, dp_sgd: Option<DpSgdSpec>| {
        let req = ToAgent::Train(TrainRequest {
            at: RoundRef {
                job: JobId::from_bytes([0; 16]),
                round,
            },
            global: global.clone(),
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
    };
    // Training without DP is refused outright.
    assert!(matches!(
        ask(&mut agent, 1, None),
        ToCoordinator::Declined { .. }
    ));
    for round in 1..=2 {
        match ask(&mut agent, round, Some(dp)) {
            ToCoordinator::Trained(r) => {
                assert_eq!(r.num_examples, 1, "the dataset size stays private");
                assert!(r.train_loss.is_none(), "the training loss stays private");
                assert!((r.epsilon.unwrap() - eps(round as usize)).abs() < 1e-12);
            }
            other => panic!("{other:?}"),
        }
    }
    match ask(&mut agent, 3, Some(dp)) {
        ToCoordinator::Declined { reason, .. } => {
            assert_eq!(reason, DeclineReason::PrivacyBudgetExhausted)
        }
        other => panic!("{other:?}"),
    }
    assert!((agent.epsilon().unwrap() - eps(2)).abs() < 1e-12);
}

#[test]
fn an_agent_seals_its_update_and_only_a_trusted_aggregator_passes_a_no_plaintext_owner() {
    let data = tg_model::dataset::digits()
        .unwrap()
        .subset(&(0..60).collect::<Vec<_>>());
    let shape = ModelShape::for_dataset(ModelKind::Mlp, 8, &data).unwrap();
    let session = tg_proto::SessionSecret::from_bytes(zeroize::Zeroizing::new([0x21; 32]));
    let owner = OwnerPolicy {
        allow_plaintext: false,
        ..OwnerPolicy::permissive()
    };
    let agent_with = |trusted: bool| {
        Agent::new(AgentId::numbered(0), shape, &data, 1)
            .unwrap()
            .with_owner(owner.clone(), OwnerLedger::in_memory("d".into()))
            .with_sealing(Some(aggregator::Sealing {
                key: session.public(),
                trusted,
                label: String::new(),
            }))
    };
    let at = RoundRef {
        job: JobId::from_bytes([0; 16]),
        round: 1,
    };
    let req = tg_proto::encode(&ToAgent::Train(TrainRequest {
        at,
        global: tg_model::init_parameters(&shape, 0).unwrap(),
        config: TrainConfig {
            local_epochs: 1,
            batch_size: 20,
            learning_rate: 0.1,
            optimizer: OptimizerSpec::Sgd,
            dp_sgd: None,
            compress: Default::default(),
            adaptive_sparsity: false,
            deadline_ms: None,
        },
        objective: LocalObjective::Plain,
        secure: None,
    }))
    .unwrap();
    let reply = |mut agent: Agent| {
        let Handled::Reply(frame) = agent.handle_frame(&req).unwrap() else {
            panic!()
        };
        tg_proto::decode::<ToCoordinator>(&frame).unwrap()
    };
    // TRUSTED: the round runs, and what leaves is ciphertext that only the
    // session key opens into the training reply.
    let ToCoordinator::Sealed(sealed) = reply(agent_with(true)) else {
        panic!("not sealed")
    };
    let plain = session.open(&sealed).unwrap();
    let r = tg_proto::decode_trained(&plain).unwrap().unwrap();
    assert_eq!((r.at, r.num_examples), (at, 60));
    // UNTRUSTED (simulated): the owner who refuses plaintext declines.
    match reply(agent_with(false)) {
        ToCoordinator::Declined { reason, .. } => {
            assert_eq!(reason, tg_proto::DeclineReason::PlaintextRefused);
        }
        other => panic!("{other:?}"),
    }
}
