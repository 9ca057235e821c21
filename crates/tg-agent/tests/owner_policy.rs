//! Red team against the data owner's policy: a coordinator that replays a
//! round, drops privacy from the offer, lowers the noise, or starts a fresh
//! job to reset the budget. The agent refuses each with a specific code, and
//! its ledger survives restarts.
#![allow(clippy::unwrap_used)]

use crate::common::*;
use tg_agent::Roster;

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
    // A NaN or out-of-range fraction would silently disable a floor.
    for bad in [
        "[secure_aggregation]\nassumed_corrupt = nan",
        "[secure_aggregation]\nmin_survivor_fraction = 1.5",
        "[secure_aggregation]\nmax_colluders = 100000000",
    ] {
        assert!(OwnerPolicy::from_toml(bad).is_err(), "{bad}");
    }
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
    let mut members: Vec<(AgentId, [u8; 32])> = (0..6u8)
        .map(|i| {
            (
                AgentId::numbered(usize::from(i)),
                SigningKey::from_bytes(&[i + 1; 32])
                    .verifying_key()
                    .to_bytes(),
            )
        })
        .collect();
    // Listed in the round's canonical seating order, as a real round is.
    members.sort_by_key(|(_, k)| tg_secagg::round::position_key(&[5; 16], 1, k));
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
            adaptive_sparsity: false,
            deadline_ms: None,
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
    let mut old = all.clone();
    old[0] = cert(&root, members[0].1, now - 1);
    assert_eq!(
        judge(old).unwrap_err().0,
        DeclineReason::UncertifiedParticipant
    );

    // An agent whose owner pinned nothing: the coordinator's roster (here
    // all uncertified Sybils around the victim) is not believed, so the
    // secure round is refused before anything is trained or sent.
    let unpinned = OwnerPolicy::default();
    assert_eq!(unpinned.roster(), Ok(Roster::Unpinned));
    let (code, detail) = judge_round(&unpinned, &ledger, &request(Vec::new()), params)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code, DeclineReason::OwnerFloor);
    assert!(detail.contains("pins no fleet root"), "{detail}");
    // …nor with certificates from a root it never pinned.
    let (code, _) = judge_round(&unpinned, &ledger, &request(all.clone()), params)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code, DeclineReason::OwnerFloor);
    // A policy that can take part in nothing is refused up front.
    assert!(
        unpinned
            .usable()
            .unwrap_err()
            .contains("refuse every round")
    );
    assert!(plaintext_ok().usable().is_ok());
    // The owner's explicit, named choice to believe the coordinator.
    let trusting = OwnerPolicy::from_toml("fleet_root = \"trust-coordinator\"").unwrap();
    assert_eq!(trusting.roster(), Ok(Roster::TrustCoordinator));
    assert!(judge_round(&trusting, &ledger, &request(Vec::new()), params).is_ok());
    assert!(OwnerPolicy::from_toml("fleet_root = \"trust-everyone\"").is_err());

    // The agent's own certificate pins its root when the policy names none:
    // the Sybil roster is then refused as uncertified.
    let own = cert(&root, members[0].1, now + 3600);
    let mut pinned = OwnerPolicy::default();
    pinned.pin_certificate_root(&own).unwrap();
    assert_eq!(
        pinned.roster(),
        Ok(Roster::Pinned(root.verifying_key().to_bytes()))
    );
    assert!(judge_round(&pinned, &ledger, &request(all.clone()), params).is_ok());
    let all_certs = all.clone();
    let mut sybil = all;
    sybil[4] = cert(&coordinators_own, members[4].1, now + 3600);
    assert_eq!(
        judge_round(&pinned, &ledger, &request(sybil), params)
            .map(|_| ())
            .unwrap_err()
            .0,
        DeclineReason::UncertifiedParticipant
    );
    // The ε an agent charges for its Skellam share counts the other
    // participants' noise only when the owner bounds the colluders: the
    // coordinator picks the sample, so a corrupt *fraction* of it is no
    // bound at all. Pinned without max_colluders: only its own share.
    let noisy_with = |policy: &OwnerPolicy, dropout: f64| {
        let mut r = request(all_certs.clone());
        if let Some(s) = r.secure.as_mut() {
            s.local_noise_variance = Some(1e9);
            // Sized for one colluder of six, as the bounded owner demands,
            // with every participant masking with every other.
            s.corrupt = 0.2;
            s.dropout = dropout;
        }
        let pending = judge_round(policy, &ledger, &r, params).unwrap();
        let mut l = ledger.clone();
        l.commit(pending).unwrap();
        l.epsilon(tg_privacy::Delta::new(1e-5).unwrap())
    };
    // Dropout 0.5 makes the round a complete graph (degree 5 of 6), 0.1 a
    // sparse one (degree 4).
    let noisy = |policy: &OwnerPolicy| noisy_with(policy, 0.5);
    let own_share_only = noisy(&pinned);
    let bounded = OwnerPolicy {
        secure_aggregation: tg_secagg::Floors {
            max_colluders: Some(1),
            ..Default::default()
        },
        ..pinned.clone()
    };
    let with_others = noisy(&bounded);
    let trusting_eps = noisy(&trusting);
    assert!(
        with_others < own_share_only && own_share_only == trusting_eps,
        "{with_others} {own_share_only} {trusting_eps}"
    );
    // On a sparse graph nothing beyond its own share is credited.
    assert_eq!(noisy_with(&bounded, 0.1), noisy_with(&pinned, 0.1));
    // A certificate from another root than the policy pins, or with a
    // policy that trusts the coordinator, is a conflict, never a silent
    // change of the owner's choice.
    let foreign = cert(&coordinators_own, members[0].1, now + 3600);
    assert!(pinned.clone().pin_certificate_root(&foreign).is_err());
    assert!(trusting.clone().pin_certificate_root(&own).is_err());
    assert!(pinned.clone().pin_certificate_root(&own).is_ok());
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
        baseline: None,
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
            adaptive_sparsity: false,
            deadline_ms: None,
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
