//! In-process runs: reproducibility, learning, refusals.

use super::*;
use tg_coordinator::RunOutcome;
use tg_types::record::RoundStatus;
use tg_types::spec::{
    DatasetSpec, ModelKind, OptimizerSpec, PartitionSpec, StrategyConfig, StrategyKind, TrainConfig,
};

fn spec(seed: u64, dropout: f64) -> JobSpec {
    JobSpec {
        dataset: DatasetSpec::Digits,
        partition: PartitionSpec::Dirichlet(0.5),
        model: ModelKind::Mlp,
        hidden: 16,
        strategy: StrategyConfig::defaults_for(StrategyKind::Scaffold),
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
        clients: 5,
        fraction: 1.0,
        min_clients: 2,
        dropout,
        seed,
        privacy: None,
        secure_aggregation: None,
        evaluate_every: 0,
        simulated_noise_seed: None,
        gate: None,
        robust: None,
        reputation: None,
        attested_aggregator: false,
    }
}

fn run(spec: JobSpec, job: u8) -> RunOutcome {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let prepared = Prepared::new(spec).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(prepared.run(
        JobId::from_bytes([job; 16]),
        &mut store,
        Duration::from_secs(60),
        |_| {},
    ))
    .unwrap()
    .outcome
}

#[test]
fn a_seed_reproduces_the_run_exactly() {
    let a = run(spec(3, 0.2), 1);
    let b = run(spec(3, 0.2), 2);
    assert_eq!(a.model, b.model);
    let parts = |o: &RunOutcome| o.history.iter().map(|r| r.participants).collect::<Vec<_>>();
    assert_eq!(parts(&a), parts(&b), "fault injection is seeded too");
    let c = run(spec(4, 0.2), 3);
    assert_ne!(a.model, c.model);
}

#[test]
fn training_improves_on_the_initial_model() {
    let mut s = spec(1, 0.0);
    s.rounds = 6;
    s.train.local_epochs = 2;
    let out = run(s, 1);
    assert!(
        out.history
            .iter()
            .all(|r| r.status == RoundStatus::Committed && r.participants == 5)
    );
    let loss = |i: usize| out.history[i].loss.unwrap();
    assert!(loss(5) < loss(0), "held-out loss falls over the rounds");
    assert!(
        out.final_evaluation.unwrap().accuracy > 0.6,
        "far above the 0.1 of chance"
    );
}

#[test]
fn unrunnable_specs_are_refused_before_any_work() {
    let mut s = spec(1, 0.0);
    s.min_clients = 9;
    assert!(matches!(Prepared::new(s), Err(InprocError::Config(_))));
    let mut s = spec(1, 0.0);
    s.dropout = 1.0;
    assert!(matches!(Prepared::new(s), Err(InprocError::Config(_))));
    let mut s = spec(1, 0.0);
    s.clients = 2000;
    s.min_clients = 1;
    assert!(
        matches!(Prepared::new(s), Err(InprocError::Model(_))),
        "more clients than examples"
    );
}

#[test]
fn an_attested_aggregator_is_refused_in_process() {
    let mut s = spec(1, 0.0);
    s.attested_aggregator = true;
    let Err(InprocError::Config(why)) = Prepared::new(s) else {
        panic!("accepted")
    };
    assert!(why.contains("fleet coordinator"), "{why}");
}
