//! The `[job]` section: what to train, on what, how many clients and
//! rounds. The same keys are the demo's flags (`lr` is `--lr`, `min_clients`
//! is `--min-clients`) and the config file's `[demo]` table.

use serde::{Deserialize, Serialize};
use tg_types::spec::{
    Compression, DatasetSpec, JobSpec, ModelKind, OptimizerSpec, PartitionSpec, StrategyConfig,
    StrategyKind, TrainConfig,
};

use crate::{JobError, Result, invalid, problem};

/// What to train: every key optional, the defaults fill the rest.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    /// Clients the job is planned for.
    pub clients: Option<u32>,
    /// Rounds to run.
    pub rounds: Option<u32>,
    /// Aggregation strategy (`fedavg`, `fedprox`, `scaffold`, `fedadam`).
    pub strategy: Option<String>,
    /// How a simulation splits the data (`iid`, `dirichlet:ALPHA`, …).
    pub partition: Option<String>,
    /// Dataset (`digits`, `mnist:DIR`, `csv:FILE`).
    pub dataset: Option<String>,
    /// Model (`mlp`, `logreg`).
    pub model: Option<String>,
    /// Local epochs per round.
    pub local_epochs: Option<u32>,
    /// Local batch size.
    pub batch_size: Option<u32>,
    /// Local learning rate.
    pub lr: Option<f64>,
    /// Local optimizer (`sgd`, `adamw`).
    pub optimizer: Option<String>,
    /// Upload compression of plaintext rounds (`none`, `q8`, `topk:F`).
    pub compress: Option<String>,
    /// Fraction of clients sampled per round.
    pub fraction: Option<f64>,
    /// Updates a round needs to commit.
    pub min_clients: Option<u32>,
    /// Simulation only: probability that a selected client drops out.
    pub dropout: Option<f64>,
    /// Seed of the initial model, the partition and fault injection.
    pub seed: Option<u64>,
    /// Hidden units of the MLP.
    pub hidden: Option<usize>,
    /// FedProx's proximal μ.
    pub mu: Option<f32>,
    /// The server learning rate (FedAdam, FedAvg with momentum).
    pub server_lr: Option<f32>,
    /// Federated evaluation every this many rounds (and after the last);
    /// 0 (the default) = only the coordinator's held-out evaluation.
    pub evaluate_every: Option<u32>,
    /// The rollout gate: a candidate commits only if agents' success with
    /// it is not shown worse than with the current model by more than this
    /// (a difference of success rates in [0, 1)); setting either gate key
    /// turns the gate on.
    pub gate_margin: Option<f64>,
    /// The rollout gate: fewest evaluation episodes per model (default 20).
    pub gate_episodes: Option<u64>,
    /// How individual updates are combined (`fedavg`, `norm-bound`,
    /// `median`, `trimmed-mean`, `krum`, `multi-krum`, `bulyan`,
    /// `outlier-3sigma`); plaintext rounds only.
    pub aggregator: Option<String>,
    /// Attackers per round the robust aggregator is sized for.
    pub byzantine: Option<u32>,
    /// `norm-bound`: the L2 bound (default: the round's median norm).
    pub norm_bound: Option<f64>,
    /// Reputation from the robust aggregator's flags (default off; any
    /// `reputation_*` key turns it on).
    pub reputation: Option<bool>,
    /// Reputation: screened rounds of an agent's that count (default 10).
    pub reputation_window: Option<u32>,
    /// Reputation: flags in the window from which an agent is down-weighted
    /// (default 1).
    pub reputation_downweight_after: Option<u32>,
    /// Reputation: flags in the window at which an agent is excluded from
    /// sampling (default 3).
    pub reputation_exclude_after: Option<u32>,
    /// Reputation: the outlier z-score above which an update is flagged
    /// (default 12).
    pub reputation_flag_z: Option<f64>,
    /// Run the round logic as an attested aggregator: agents verify the
    /// coordinator's TEE evidence and seal their updates to its key.
    pub attested_aggregator: Option<bool>,
}

impl JobSection {
    /// `self` where it has a value, else `under` (flags over a file).
    #[must_use]
    pub fn over(&self, under: &JobSection) -> JobSection {
        macro_rules! pick {
            ($($f:ident),*) => { JobSection { $($f: self.$f.clone().or_else(|| under.$f.clone())),* } };
        }
        pick!(
            clients,
            rounds,
            strategy,
            partition,
            dataset,
            model,
            local_epochs,
            batch_size,
            lr,
            optimizer,
            compress,
            fraction,
            min_clients,
            dropout,
            seed,
            hidden,
            mu,
            server_lr,
            evaluate_every,
            gate_margin,
            gate_episodes,
            aggregator,
            byzantine,
            norm_bound,
            reputation,
            reputation_window,
            reputation_downweight_after,
            reputation_exclude_after,
            reputation_flag_z,
            attested_aggregator
        )
    }
}

/// The defaults: chosen to converge on non-IID digits in well under a
/// minute on 2 cores.
pub mod defaults {
    /// Clients.
    pub const CLIENTS: u32 = 10;
    /// Rounds.
    pub const ROUNDS: u32 = 50;
    /// Strategy.
    pub const STRATEGY: &str = "fedavg";
    /// Partition.
    pub const PARTITION: &str = "dirichlet:0.5";
    /// Dataset.
    pub const DATASET: &str = "digits";
    /// Model.
    pub const MODEL: &str = "mlp";
    /// Local epochs.
    pub const LOCAL_EPOCHS: u32 = 2;
    /// Batch size.
    pub const BATCH_SIZE: u32 = 16;
    /// Learning rate.
    pub const LR: f64 = 0.1;
    /// Optimizer.
    pub const OPTIMIZER: &str = "sgd";
    /// Compression.
    pub const COMPRESS: &str = "none";
    /// Sampling fraction.
    pub const FRACTION: f64 = 1.0;
    /// Fault injection.
    pub const DROPOUT: f64 = 0.0;
    /// Seed.
    pub const SEED: u64 = 42;
    /// Hidden units.
    pub const HIDDEN: usize = 64;
}

fn bad(key: &str, value: impl std::fmt::Display, why: &str, fix: &str) -> JobError {
    invalid(format!("{key} = {value}"), why, fix).at(key)
}

fn parsed<T: std::str::FromStr<Err = tg_types::spec::SpecError>>(
    key: &'static str,
    s: &str,
) -> Result<T> {
    s.parse::<T>().map_err(|e| {
        invalid(
            e.to_string(),
            format!("{key} takes one of the listed forms"),
            format!("use {}", e.expected),
        )
        .at(key)
    })
}

/// The job's spec from `s` over the defaults; no privacy or secure
/// aggregation yet. An error names its key.
pub(crate) fn resolve(s: &JobSection) -> Result<JobSpec> {
    use defaults as d;
    macro_rules! pick {
        ($field:ident, $default:expr) => {
            s.$field.clone().unwrap_or_else(|| $default.into())
        };
    }
    let clients: u32 = pick!(clients, d::CLIENTS);
    if clients == 0 {
        return Err(bad(
            "clients",
            0,
            "a federation needs at least one client",
            "use 1 or more (default 10)",
        ));
    }
    let rounds: u32 = pick!(rounds, d::ROUNDS);
    if rounds == 0 {
        return Err(bad(
            "rounds",
            0,
            "at least one round is needed to train",
            "use 1 or more",
        ));
    }
    let strategy: StrategyKind = parsed("strategy", &pick!(strategy, d::STRATEGY))?;
    let partition: PartitionSpec = parsed("partition", &pick!(partition, d::PARTITION))?;
    let dataset: DatasetSpec = parsed("dataset", &pick!(dataset, d::DATASET))?;
    let model: ModelKind = parsed("model", &pick!(model, d::MODEL))?;
    let compress: Compression = parsed("compress", &pick!(compress, d::COMPRESS))?;
    let local_epochs: u32 = pick!(local_epochs, d::LOCAL_EPOCHS);
    let batch_size: u32 = pick!(batch_size, d::BATCH_SIZE);
    for (key, v) in [("local_epochs", local_epochs), ("batch_size", batch_size)] {
        if v == 0 {
            return Err(bad(key, 0, "no training would happen", "use 1 or more"));
        }
    }
    let lr: f64 = pick!(lr, d::LR);
    if !(lr > 0.0 && lr.is_finite()) {
        return Err(bad(
            "lr",
            lr,
            "the learning rate must be a positive number",
            "try 0.1 (SGD) or 0.001 (AdamW)",
        ));
    }
    let optimizer = match pick!(optimizer, d::OPTIMIZER).as_str() {
        "sgd" => OptimizerSpec::Sgd,
        "adamw" => OptimizerSpec::AdamW { weight_decay: 1e-4 },
        other => {
            return Err(bad(
                "optimizer",
                other,
                "unknown optimizer",
                "use sgd or adamw",
            ));
        }
    };
    let fraction: f64 = pick!(fraction, d::FRACTION);
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(bad(
            "fraction",
            fraction,
            "the sampling fraction must be in (0, 1]",
            "use e.g. 0.5",
        ));
    }
    let robust = robust(s)?;
    // The default quorum is half the clients, raised to what a robust
    // aggregator needs (a smaller round would only fail with E113).
    let min_clients: u32 = s.min_clients.unwrap_or_else(|| {
        let need = robust.map_or(1, |r| u32::try_from(r.min_updates()).unwrap_or(u32::MAX));
        clients.div_ceil(2).max(need).min(clients).max(1)
    });
    if min_clients == 0 {
        return Err(bad(
            "min_clients",
            0,
            "a round with no updates cannot produce a model",
            "use 1 or more",
        ));
    }
    if min_clients > clients {
        return Err(JobError::Quorum(problem(
            format!("quorum min_clients = {min_clients} is larger than clients = {clients}"),
            "no round could ever commit",
            format!("use min_clients {clients} or less, or more clients"),
        ))
        .at("min_clients"));
    }
    let dropout: f64 = pick!(dropout, d::DROPOUT);
    if !(0.0..1.0).contains(&dropout) {
        return Err(bad(
            "dropout",
            dropout,
            "the dropout probability must be in [0, 1)",
            "use e.g. 0.3",
        ));
    }
    let hidden: usize = pick!(hidden, d::HIDDEN);
    if hidden == 0 {
        return Err(bad(
            "hidden",
            0,
            "the hidden layer needs at least one unit",
            "use e.g. 64",
        ));
    }
    let mut sc = StrategyConfig::defaults_for(strategy);
    if let Some(mu) = s.mu {
        if !(mu >= 0.0 && mu.is_finite()) {
            return Err(bad("mu", mu, "FedProx μ must be ≥ 0", "use e.g. 0.01"));
        }
        sc.proximal_mu = mu;
    }
    if let Some(slr) = s.server_lr {
        if !(slr > 0.0 && slr.is_finite()) {
            return Err(bad(
                "server_lr",
                slr,
                "the server learning rate must be positive",
                "use 1.0 for FedAvg, 0.01 for FedAdam",
            ));
        }
        sc.server_lr = slr;
    }
    Ok(JobSpec {
        dataset,
        partition,
        model,
        hidden,
        strategy: sc,
        train: TrainConfig {
            local_epochs,
            batch_size,
            learning_rate: lr,
            optimizer,
            dp_sgd: None,
            compress,
            // The coordinator decides per round (its strategy, plaintext).
            adaptive_sparsity: false,
            deadline_ms: None,
        },
        rounds,
        clients,
        fraction,
        min_clients,
        dropout,
        seed: pick!(seed, d::SEED),
        privacy: None,
        secure_aggregation: None,
        evaluate_every: s.evaluate_every.unwrap_or(0),
        simulated_noise_seed: None,
        gate: gate(s)?,
        robust,
        reputation: reputation(s)?,
        attested_aggregator: s.attested_aggregator.unwrap_or(false),
    })
}

/// Reputation from `reputation` / `reputation_*`, checked.
fn reputation(s: &JobSection) -> Result<Option<tg_types::reputation::ReputationPolicy>> {
    let keys = s.reputation_window.is_some()
        || s.reputation_downweight_after.is_some()
        || s.reputation_exclude_after.is_some()
        || s.reputation_flag_z.is_some();
    match s.reputation {
        Some(false) if keys => {
            return Err(invalid(
                "reputation = false with reputation_* keys",
                "the keys set a reputation policy the job turns off",
                "remove the keys, or set reputation = true",
            )
            .at("reputation"));
        }
        Some(false) => return Ok(None),
        None if !keys => return Ok(None),
        _ => {}
    }
    let d = tg_types::reputation::ReputationPolicy::default();
    let policy = tg_types::reputation::ReputationPolicy {
        window: s.reputation_window.unwrap_or(d.window),
        downweight_after: s.reputation_downweight_after.unwrap_or(d.downweight_after),
        exclude_after: s.reputation_exclude_after.unwrap_or(d.exclude_after),
        flag_z: s.reputation_flag_z.unwrap_or(d.flag_z),
    };
    policy.check().map_err(|why| {
        invalid(
            "reputation policy",
            why,
            "e.g. reputation_window = 10, reputation_downweight_after = 1, reputation_exclude_after = 3, reputation_flag_z = 12",
        )
        .at("reputation")
    })?;
    Ok(Some(policy))
}

/// The robust aggregator from `aggregator` / `byzantine` / `norm_bound`.
fn robust(s: &JobSection) -> Result<Option<tg_types::robust::RobustSpec>> {
    use tg_types::robust::{AggregatorKind, RobustSpec};
    let kind: AggregatorKind = match &s.aggregator {
        Some(a) => parsed("aggregator", a)?,
        None if s.byzantine.is_some() || s.norm_bound.is_some() => {
            let key = if s.byzantine.is_some() {
                "byzantine"
            } else {
                "norm_bound"
            };
            return Err(invalid(
                format!("{key} without an aggregator"),
                "it sizes a robust aggregator, and the job has none",
                "add aggregator = \"median\" (or krum, trimmed-mean, …), or remove the key",
            )
            .at(key));
        }
        None => return Ok(None),
    };
    if kind == AggregatorKind::FedAvg && s.byzantine.unwrap_or(0) == 0 {
        // Plain FedAvg: no wrapper at all (a wrapper would replace the
        // strategy's own fold rule, e.g. central DP's clip).
        return Ok(None);
    }
    let spec = RobustSpec {
        kind,
        f: s.byzantine.unwrap_or(0),
        norm_bound: s.norm_bound,
    };
    spec.check().map_err(|why| {
        invalid(
            format!("aggregator = {kind}"),
            why,
            "see docs/THREAT_MODEL.md, Poisoning",
        )
        .at("aggregator")
    })?;
    Ok(Some(spec))
}

/// The rollout gate from `gate_margin` / `gate_episodes`, checked.
fn gate(s: &JobSection) -> Result<Option<tg_types::spec::GateSpec>> {
    if s.gate_margin.is_none() && s.gate_episodes.is_none() {
        return Ok(None);
    }
    let margin = s.gate_margin.unwrap_or(0.0);
    if !(0.0..1.0).contains(&margin) {
        return Err(bad(
            "gate_margin",
            margin,
            "the gate's margin is a difference of success rates, in [0, 1)",
            "use 0.0 (reject only a candidate shown worse) or e.g. 0.05",
        ));
    }
    let min_episodes = s.gate_episodes.unwrap_or(20);
    if min_episodes == 0 {
        return Err(bad(
            "gate_episodes",
            min_episodes,
            "the gate judges on evaluation episodes and needs at least one per model",
            "use e.g. 20",
        ));
    }
    Ok(Some(tg_types::spec::GateSpec {
        margin,
        min_episodes,
    }))
}
