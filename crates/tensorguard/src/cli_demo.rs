//! The demo's secure- and robust-aggregation flags (a job file's
//! `[secure_aggregation]`, and `[job] aggregator`, `byzantine`,
//! `norm_bound`).

use clap::Args;

/// Secure aggregation for the demo.
#[derive(Debug, Clone, Args)]
pub struct SecureArgs {
    /// Aggregate with SecAgg+: the coordinator learns only the sum of the updates.
    #[arg(long, env = "TENSORGUARD_SECURE_AGGREGATION")]
    pub secure_aggregation: bool,
    /// Bits per lane of the masked updates (arithmetic mod 2^B).
    #[arg(long, value_name = "B", default_value_t = 20, env = "TENSORGUARD_BITS")]
    pub bits: u32,
    /// L2 clipping norm of each update before encoding.
    #[arg(
        long,
        value_name = "C",
        default_value_t = 10.0,
        env = "TENSORGUARD_SECAGG_CLIP"
    )]
    pub secagg_clip: f64,
    /// Shared random-k sparsification: fraction F of coordinates every client sends
    /// each round (the same ones for all, from a public per-round seed).
    #[arg(long, value_name = "F", env = "TENSORGUARD_SPARSITY")]
    pub sparsity: Option<f64>,
}

impl Default for SecureArgs {
    fn default() -> Self {
        Self {
            secure_aggregation: false,
            bits: 20,
            secagg_clip: 10.0,
            sparsity: None,
        }
    }
}

/// How the coordinator combines individual (plaintext) updates.
#[derive(Debug, Clone, Args, Default)]
pub struct RobustArgs {
    /// Robust aggregator: fedavg | norm-bound | median | trimmed-mean |
    /// krum | multi-krum | bulyan | outlier-3sigma (plaintext rounds only).
    #[arg(long, env = "TENSORGUARD_AGGREGATOR", value_name = "A")]
    pub aggregator: Option<String>,
    /// Attackers per round the robust aggregator is sized for (f).
    #[arg(long, env = "TENSORGUARD_BYZANTINE", value_name = "F")]
    pub byzantine: Option<u32>,
    /// norm-bound: clip every update to this L2 norm (default: the round's
    /// median norm).
    #[arg(long, env = "TENSORGUARD_NORM_BOUND", value_name = "B")]
    pub norm_bound: Option<f64>,
    /// Keep each agent's reputation from the aggregator's flags: flagged
    /// agents are down-weighted, then excluded from sampling (default
    /// policy: 3 flags in 10 screened rounds; a job file sets its own).
    #[arg(long)]
    pub reputation: bool,
    /// SIMULATION: a share of the clients poison the federation: sign-flip
    /// | scaling | noise | label-flip | alie | backdoor.
    #[arg(long, value_name = "KIND", requires = "attackers")]
    pub attack: Option<String>,
    /// SIMULATION: the share of clients that attack, in [0, 0.5) (the
    /// robust aggregator is sized for them unless --byzantine says otherwise).
    #[arg(long, value_name = "F", requires = "attack")]
    pub attackers: Option<f64>,
}

/// `bench robust`: which rule, over which saved updates.
#[derive(Debug, Clone, Args)]
pub struct RobustBenchArgs {
    /// The rule: fedavg | norm-bound | median | trimmed-mean | krum |
    /// multi-krum | bulyan | outlier-3sigma.
    #[arg(long, value_name = "A")]
    pub aggregator: String,
    /// Attackers the rule is sized for (f).
    #[arg(long, value_name = "F", default_value_t = 0)]
    pub byzantine: u32,
    /// norm-bound: the L2 bound (default: the median norm).
    #[arg(long, value_name = "B")]
    pub norm_bound: Option<f64>,
    /// One safetensors file per agent, in agent order.
    #[arg(required = true, value_name = "UPDATE.safetensors")]
    pub files: Vec<std::path::PathBuf>,
}
