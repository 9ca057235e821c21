//! Command-line definition (clap derive). Parsing only: values are resolved
//! against the config file and defaults in `config.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[path = "cli_compute.rs"]
mod compute;
#[path = "cli_demo.rs"]
mod demo;
#[path = "cli_fleet.rs"]
mod fleet;
#[path = "cli_privacy.rs"]
mod privacy;
#[path = "cli_trust.rs"]
mod trust;
pub use compute::{
    ComputeCommand, ComputeStartArgs, MeshArgs, TaskCommand, TaskSubmitArgs, WalletArgs,
};
pub use demo::{RobustArgs, RobustBenchArgs, SecureArgs};
pub use fleet::{
    AgentCommand, AgentStartArgs, CoordinatorCommand, CoordinatorStartArgs, EnrollCommand, TlsArgs,
    UpArgs,
};
pub use privacy::{AccountantKind, PlanArgs, PrivacyCommand, SkellamArgs};
pub use trust::{
    ApiCommand, AttestCommand, AttestVerifyArgs, AuditCommand, EvidenceKind, ExportFormat,
    KeyPurposeArg, KeysCommand, RoleArg, TokenCommand,
};

/// Private federated learning for fleets.
#[derive(Debug, Parser)]
#[command(name = "tensorguard", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Data directory (database, models). Default: the XDG data dir.
    #[arg(long, global = true, env = "TENSORGUARD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Config file. Default: $XDG_CONFIG_HOME/tensorguard/config.toml if it exists.
    #[arg(long, global = true, env = "TENSORGUARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// Log verbosity (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a real federation in this process on a real dataset and report it.
    #[command(allow_negative_numbers = true)]
    Demo(Box<DemoArgs>),
    /// Inspect recorded runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// A run's model registry: its versions, and rollback of its head.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Version, build features, crypto backends and CPU features.
    Info,
    /// Write a config file and a new Ed25519 identity key.
    Init(InitArgs),
    /// Check that this machine is ready (data dir, key permissions, ports, AES-NI).
    Doctor,
    /// Print a shell completion script.
    Completion {
        /// Shell to generate for.
        shell: clap_complete::Shell,
    },
    /// Validate or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Differential-privacy accounting: ε for a training plan, or the noise for a target ε.
    #[command(subcommand)]
    Privacy(PrivacyCommand),
    /// Measure performance; prints JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a job for a fleet of agents over the network.
    #[command(subcommand)]
    Coordinator(CoordinatorCommand),
    /// Join a coordinator's job with this machine's data.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Admit agents to a coordinator.
    #[command(subcommand)]
    Enroll(EnrollCommand),
    /// Start this machine's agent in the background (a daemon).
    Up(Box<UpArgs>),
    /// Stop the background agent.
    Down,
    /// What the background agent is doing.
    Status {
        /// Refresh every second.
        #[arg(long)]
        watch: bool,
    },
    /// Node keys: generate, list, rotate, export-public, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Run a volunteer compute node (tasks for others, under CPU and memory caps).
    #[command(subcommand)]
    Compute(ComputeCommand),
    /// Submit compute tasks and show them.
    #[command(subcommand)]
    Task(TaskCommand),
    /// This node's points: receipts for verified results, exportable and verifiable.
    Wallet(WalletArgs),
    /// The compute network's peers: address, latency, protocol, reputation.
    Peers {
        #[command(flatten)]
        mesh: MeshArgs,
    },
    /// Print the REST API's OpenAPI 3.1 document (JSON).
    Openapi,
    /// The REST API's bearer tokens.
    #[command(subcommand)]
    Api(ApiCommand),
    /// The tamper-evident audit log: verify, export, compliance report.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// TEE attestation: verify evidence, detect this machine's TEE.
    #[command(subcommand)]
    Attest(AttestCommand),
    /// The background agent's log.
    Logs {
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Privacy accountants on the reference workloads (median of repeats).
    Accountant {
        /// Repetitions per workload.
        #[arg(long, default_value_t = 11)]
        repeat: usize,
    },
    /// One secure-aggregation round, every party in this process (timings per party).
    Secagg(SecaggBenchArgs),
    /// Coordinator memory while a round's plaintext FedAvg updates stream in
    /// from agents (a child process writes their frames to a pipe).
    Aggregate(crate::bench_aggregate::AggregateBenchArgs),
    /// (internal) The agents' side of `bench aggregate`: update frames to stdout.
    #[command(hide = true)]
    AggregateFeed(crate::bench_aggregate::FeedArgs),
    /// A robust aggregator on saved updates (safetensors files, one per
    /// agent; `num_examples` metadata): the aggregate as JSON, for the
    /// cross-check with Flower (scripts/robust/flower_crosscheck.py).
    Robust(RobustBenchArgs),
    /// The compute network on this machine: N node processes on 127.0.0.1 and
    /// a submitter running M embedding tasks, with SIGKILLs mid-run.
    Tasks(Box<crate::bench_tasks::TasksBenchArgs>),
    /// MiniLM inference on this node alone: sentences/s at batch 1 and 32.
    Embed(crate::bench_tasks::EmbedBenchArgs),
    /// A real fleet on this machine: a coordinator and N agent processes on
    /// 127.0.0.1 (start-to-ready, idle RSS, coordinator overhead per round).
    Fleet(FleetBenchArgs),
    /// The operators' REST API: request latency over a store of `rounds`
    /// rounds, and how soon a recorded round reaches the live event stream.
    Api {
        /// Rounds recorded in the benchmark's store.
        #[arg(long, default_value_t = 200)]
        rounds: u32,
        /// Requests per route.
        #[arg(long, default_value_t = 500)]
        requests: usize,
    },
    /// Trust primitives: attestation verification on the public vectors,
    /// key unsealing, audit-log append and verify.
    Trust {
        /// The attestation vectors (../shared/attestation-vectors).
        #[arg(
            long,
            value_name = "DIR",
            default_value = "../shared/attestation-vectors"
        )]
        vectors: PathBuf,
        /// Repetitions (median reported).
        #[arg(long, default_value_t = 21)]
        repeat: usize,
    },
}

#[derive(Debug, Args)]
pub struct FleetBenchArgs {
    /// Agent processes.
    #[arg(long, default_value_t = 50)]
    pub agents: usize,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Run the rounds under secure aggregation.
    #[arg(long)]
    pub secure_aggregation: bool,
    /// Run this job file instead (its `[job] clients` agents, on loopback;
    /// each agent holds shard i/N of the job's dataset, split as the job's
    /// partition and seed say, as `demo --job` splits it).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["agents", "rounds", "secure_aggregation"])]
    pub job: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SecaggBenchArgs {
    /// Clients in the round.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Lanes per input vector.
    #[arg(long, default_value_t = 1_000_000)]
    pub dim: usize,
    /// Fraction of clients that drop after sharing their keys (before the masked input).
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    /// Bits per lane (arithmetic mod 2^B).
    #[arg(long, default_value_t = 20)]
    pub bits: u32,
    /// Server threads for unmasking (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed for the inputs and which clients drop (keys come from the OS).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The server the thresholds are chosen against; semi-honest is the
    /// lower-security setting, for comparison.
    #[arg(long, value_enum, default_value_t = ThreatArg::Malicious)]
    pub threat: ThreatArg,
}

/// The server secure aggregation defends against.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ThreatArg {
    /// A coordinator that deviates from the protocol in any way (default).
    Malicious,
    /// LOWER SECURITY: a coordinator that follows the protocol.
    SemiHonest,
}

impl From<ThreatArg> for tg_secagg::Threat {
    fn from(t: ThreatArg) -> Self {
        match t {
            ThreatArg::Malicious => Self::Malicious,
            ThreatArg::SemiHonest => Self::SemiHonest,
        }
    }
}

#[derive(Debug, Args, Default)]
pub struct DemoArgs {
    /// Number of clients (agents).
    #[arg(long, env = "TENSORGUARD_CLIENTS", value_name = "N")]
    pub clients: Option<u32>,
    /// Number of rounds.
    #[arg(long, env = "TENSORGUARD_ROUNDS", value_name = "R")]
    pub rounds: Option<u32>,
    /// Aggregation strategy: fedavg | fedprox | scaffold | fedadam.
    #[arg(long, env = "TENSORGUARD_STRATEGY")]
    pub strategy: Option<String>,
    /// Data split: iid | dirichlet:A | shards:K.
    #[arg(long, env = "TENSORGUARD_PARTITION")]
    pub partition: Option<String>,
    /// Data: digits | mnist-idx:DIR | csv:PATH.
    #[arg(long, env = "TENSORGUARD_DATASET")]
    pub dataset: Option<String>,
    /// Model: mlp | cnn.
    #[arg(long, env = "TENSORGUARD_MODEL")]
    pub model: Option<String>,
    /// Local epochs per round.
    #[arg(long, env = "TENSORGUARD_LOCAL_EPOCHS", value_name = "E")]
    pub local_epochs: Option<u32>,
    /// Local mini-batch size.
    #[arg(long, env = "TENSORGUARD_BATCH_SIZE")]
    pub batch_size: Option<u32>,
    /// Local learning rate.
    #[arg(long, env = "TENSORGUARD_LR")]
    pub lr: Option<f64>,
    /// Local optimizer: sgd | adamw.
    #[arg(long, env = "TENSORGUARD_OPTIMIZER")]
    pub optimizer: Option<String>,
    /// How agents send plaintext updates: none | q8 (8-bit, ~4x smaller) |
    /// topk:F (the largest fraction F, the rest carried to the next round).
    #[arg(long, env = "TENSORGUARD_COMPRESS", value_name = "FORM")]
    pub compress: Option<String>,
    /// Fraction of clients sampled per round, in (0, 1].
    #[arg(long, env = "TENSORGUARD_FRACTION")]
    pub fraction: Option<f64>,
    /// Quorum: fewest updates for a round to commit. Default: half the clients (at least 1).
    #[arg(long, env = "TENSORGUARD_MIN_CLIENTS", value_name = "N")]
    pub min_clients: Option<u32>,
    /// Fault injection: probability that a selected client drops out of a round.
    #[arg(long, env = "TENSORGUARD_DROPOUT", value_name = "P")]
    pub dropout: Option<f64>,
    /// Seed for partitioning, initialisation, sampling and shuffling.
    #[arg(long, env = "TENSORGUARD_SEED")]
    pub seed: Option<u64>,
    /// MLP hidden width.
    #[arg(long, env = "TENSORGUARD_HIDDEN")]
    pub hidden: Option<usize>,
    /// FedProx proximal coefficient μ.
    #[arg(long, env = "TENSORGUARD_MU")]
    pub mu: Option<f32>,
    /// Server learning rate (FedAdam η; global step for the others).
    #[arg(long, env = "TENSORGUARD_SERVER_LR")]
    pub server_lr: Option<f32>,
    /// Federated evaluation: every K rounds (and after the last), clients
    /// evaluate the new model on their own data (off by default; not with DP).
    #[arg(long, value_name = "K", env = "TENSORGUARD_EVALUATE_EVERY")]
    pub evaluate_every: Option<u32>,
    /// Skip training the centralized yardstick.
    #[arg(long)]
    pub no_baseline: bool,
    /// Run this job file in process (the file a fleet's coordinator runs:
    /// `[job]`, `[privacy]`, `[secure_aggregation]`); job flags are then
    /// refused, the file is the whole job.
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "clients", "rounds", "strategy", "partition", "dataset", "model", "local_epochs",
        "batch_size", "lr", "optimizer", "compress", "fraction", "min_clients", "dropout",
        "seed", "hidden", "mu", "server_lr", "dp", "secure_aggregation", "aggregator",
        "byzantine", "norm_bound", "reputation",
    ])]
    pub job: Option<PathBuf>,
    /// Watch the demo in the web dashboard on this address (`--dashboard`
    /// alone: 127.0.0.1:9100); prints a one-hour viewer token and keeps
    /// serving after the demo until Ctrl-C.
    #[arg(long, value_name = "IP:PORT", num_args = 0..=1, default_missing_value = "127.0.0.1:9100")]
    pub dashboard: Option<std::net::SocketAddr>,
    /// Instead of a federation, run the compute network's models here
    /// (embed, classify, chunk with all-MiniLM-L6-v2) to show this machine
    /// can serve tasks, and report their throughput.
    #[arg(long)]
    pub compute: bool,
    /// Model directory for `--compute` (default: DATA/compute/models).
    #[arg(
        long,
        env = "TENSORGUARD_MODELS",
        value_name = "DIR",
        requires = "compute"
    )]
    pub models: Option<PathBuf>,
    #[command(flatten)]
    pub dp: DpArgs,
    #[command(flatten)]
    pub secure: SecureArgs,
    #[command(flatten)]
    pub robust: RobustArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DpModeArg {
    /// User-level DP-FedAvg: clip client updates, noise the sum at the coordinator.
    Central,
    /// Sample-level DP-SGD in every client's local training.
    LocalSgd,
    /// User-level DP under secure aggregation: clients add Skellam noise shares.
    Distributed,
}

/// Differential privacy for the demo.
#[derive(Debug, Clone, Args)]
pub struct DpArgs {
    /// Train with differential privacy: central (user-level DP-FedAvg), local-sgd
    /// (sample-level DP-SGD) or distributed (Skellam noise under secure aggregation).
    #[arg(long, value_enum, env = "TENSORGUARD_DP")]
    pub dp: Option<DpModeArg>,
    /// Privacy budget ε the job must not exceed (required with --dp).
    #[arg(long, value_name = "E", env = "TENSORGUARD_TARGET_EPSILON")]
    pub target_epsilon: Option<f64>,
    /// δ of the (ε, δ) guarantee.
    #[arg(
        long,
        value_name = "D",
        default_value_t = 1e-5,
        env = "TENSORGUARD_DELTA"
    )]
    pub delta: f64,
    /// Accountant for the ledger and for calibration.
    #[arg(
        long,
        value_enum,
        default_value = "pld",
        env = "TENSORGUARD_ACCOUNTANT"
    )]
    pub accountant: AccountantKind,
    /// Noise multiplier σ, or `auto`: the smallest σ with which all rounds fit the budget.
    #[arg(
        long,
        value_name = "S|auto",
        default_value = "auto",
        env = "TENSORGUARD_NOISE_MULTIPLIER"
    )]
    pub noise_multiplier: String,
    /// Clipping norm: per client update (central; `adaptive` tracks the median norm,
    /// the default) or per example gradient (local-sgd; default 1.0).
    #[arg(long, value_name = "C|adaptive", env = "TENSORGUARD_CLIP")]
    pub clip: Option<String>,
    /// Central DP: number of users sampling is over (one simulated client each; replaces --clients).
    #[arg(long, value_name = "N", env = "TENSORGUARD_POPULATION")]
    pub population: Option<u32>,
    /// Distributed DP: the ε the budget stops on — against everyone but the
    /// coordinator (sampling amplification), or against the coordinator,
    /// which picks the sample (no amplification; more noise).
    #[arg(long, value_enum, default_value = "others")]
    pub budget_against: BudgetAgainstArg,
}

/// Whom a distributed-DP budget is spent against.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum BudgetAgainstArg {
    /// Everyone but the coordinator (amplified by sampling).
    #[default]
    Others,
    /// The coordinator itself (no amplification).
    Coordinator,
}

impl From<BudgetAgainstArg> for tg_types::privacy::BudgetAgainst {
    fn from(b: BudgetAgainstArg) -> Self {
        match b {
            BudgetAgainstArg::Others => Self::Others,
            BudgetAgainstArg::Coordinator => Self::Coordinator,
        }
    }
}

impl Default for DpArgs {
    /// The same values as the flags' defaults: no DP.
    fn default() -> Self {
        Self {
            dp: None,
            target_epsilon: None,
            delta: 1e-5,
            accountant: AccountantKind::Pld,
            noise_multiplier: "auto".into(),
            clip: None,
            population: None,
            budget_against: BudgetAgainstArg::Others,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List,
    /// Show one run, round by round.
    Show {
        /// Run id or a unique prefix of it.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every committed version of a run, oldest first, with its parent,
    /// metrics and ε; `*` marks the head.
    List {
        /// Run id or a unique prefix of it.
        run: String,
    },
    /// One version in full.
    Show {
        /// Run id or a unique prefix of it.
        run: String,
        /// The version's SHA-256, or its first 6+ hex digits.
        #[arg(value_name = "VERSION")]
        digest: String,
    },
    /// Move the run's head back to an earlier version: its next round (and
    /// the fleet) starts from it. Audited as `model.rolled_back`.
    Rollback {
        /// Run id or a unique prefix of it.
        run: String,
        /// The version's SHA-256, or its first 6+ hex digits.
        #[arg(value_name = "VERSION")]
        digest: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory for config.toml and identity.key. Default: the XDG config dir.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Overwrite an existing config and key.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file; names the offending key and line.
    Validate {
        /// File to check (default: the active config file).
        file: Option<PathBuf>,
    },
    /// Show the effective configuration and where each value came from.
    Show,
}
