//! Red team: simulated poisoning attackers against the robust aggregators,
//! on the production coordinator and agents.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should fail the test loudly

use std::collections::BTreeMap;
use std::time::Duration;

use tg_inproc::Prepared;
use tg_inproc::attack::{AttackKind, AttackSpec};
use tg_store::Store;
use tg_types::JobId;
use tg_types::record::RoundStatus;
use tg_types::robust::{AggregatorKind, RobustSpec};
use tg_types::spec::{
    DatasetSpec, JobSpec, ModelKind, OptimizerSpec, PartitionSpec, StrategyConfig, StrategyKind,
    TrainConfig,
};

fn spec(robust: Option<RobustSpec>) -> JobSpec {
    JobSpec {
        dataset: DatasetSpec::Digits,
        partition: PartitionSpec::Iid,
        model: ModelKind::Mlp,
        hidden: 16,
        strategy: StrategyConfig::defaults_for(StrategyKind::FedAvg),
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
        rounds: 3,
        clients: 10,
        fraction: 1.0,
        min_clients: 5,
        dropout: 0.0,
        seed: 7,
        privacy: None,
        secure_aggregation: None,
        evaluate_every: 0,
        simulated_noise_seed: None,
        gate: None,
        robust,
        reputation: None,
        attested_aggregator: false,
    }
}

/// Runs `prepared` to the end as job `[job; 16]`.
fn run(prepared: &Prepared, store: &mut Store, job: u8) -> tg_coordinator::runner::Finished {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(prepared.run(
        JobId::from_bytes([job; 16]),
        store,
        Duration::from_secs(60),
        |_| {},
    ))
    .unwrap()
}

#[test]
fn the_3sigma_filter_drops_the_one_scaled_update_every_round_and_the_audit_names_it() {
    let robust = RobustSpec {
        kind: AggregatorKind::Outlier3Sigma,
        f: 1,
        norm_bound: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut prepared = Prepared::new(spec(Some(robust))).unwrap();
    // 1 of 10 agents scales its update by 10.
    let who = prepared
        .set_attack(AttackSpec {
            kind: AttackKind::Scaling,
            fraction: 0.1,
        })
        .unwrap();
    assert_eq!(who.len(), 1);
    let attacker = tg_types::AgentId::numbered(who[0]);
    let finished = run(&prepared, &mut store, 3);
    for r in &finished.outcome.history {
        assert_eq!(
            r.status,
            RoundStatus::Committed,
            "round {}: {:?}",
            r.round,
            r.reason
        );
        assert_eq!(r.screened.len(), 10, "round {}", r.round);
        for s in &r.screened {
            if s.agent == attacker {
                assert!(
                    !s.admitted && s.score.is_some_and(|z| z > 3.0),
                    "round {}: {s:?}",
                    r.round
                );
            } else {
                assert!(s.admitted, "round {}: honest {s:?} rejected", r.round);
            }
        }
        // The round's audit entry carries the rejection with the agent and score.
        let audit = tg_coordinator::service::audit::round(r, 5, &BTreeMap::new());
        let body = serde_json::to_value(&audit).unwrap();
        let rejected: Vec<_> = body["screened"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["admitted"] == false)
            .collect();
        assert_eq!(rejected.len(), 1, "{body}");
        assert_eq!(rejected[0]["agent"], attacker.to_string());
        assert!(rejected[0]["score"].as_f64().unwrap() > 3.0);
    }
    // The store keeps the screening too.
    let stored = store
        .rounds(&JobId::from_bytes([3; 16]).to_string())
        .unwrap();
    assert_eq!(stored[0].screened, finished.outcome.history[0].screened);
}

#[test]
fn a_backdoor_is_measured_apart_from_clean_accuracy() {
    let mut prepared = Prepared::new(spec(None)).unwrap();
    prepared
        .set_attack(AttackSpec {
            kind: AttackKind::Backdoor,
            fraction: 0.3,
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let finished = run(&prepared, &mut store, 4);
    let asr = prepared.backdoor_success(&finished.outcome.model).unwrap();
    assert!((0.0..=1.0).contains(&asr), "{asr}");
    // Attack shares outside [0, 0.5) are refused.
    assert!(
        prepared
            .set_attack(AttackSpec {
                kind: AttackKind::Noise,
                fraction: 0.5,
            })
            .is_err()
    );
}
