//! The `privacy` subcommands' arguments: accountants, Skellam releases and
//! the (q, steps, δ) plan every accounting question shares.

use clap::{Args, Subcommand};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AccountantKind {
    /// Rényi DP (tight for large step counts; matches Opacus).
    Rdp,
    /// Privacy loss distributions (tightest; matches Google dp-accounting).
    Pld,
    /// Skellam mechanism RDP (Agarwal, Kairouz & Liu 2021): distributed DP
    /// with integer noise; `privacy epsilon` only.
    Skellam,
}

/// Parameters of a Skellam release, as in Agarwal, Kairouz & Liu (2021).
#[derive(Debug, Args, Default)]
pub struct SkellamArgs {
    /// L2 sensitivity Δ₂ (e.g. the clipping norm), unscaled.
    #[arg(long, value_name = "D2")]
    pub l2_sensitivity: Option<f64>,
    /// L1 sensitivity Δ₁, unscaled (or give --dimension for Δ₁ = Δ₂·√d).
    #[arg(long, value_name = "D1")]
    pub l1_sensitivity: Option<f64>,
    /// Dimension d of the released vector.
    #[arg(long, value_name = "D")]
    pub dimension: Option<u64>,
    /// Central noise variance μ (sum over clients), unscaled.
    #[arg(long, value_name = "MU")]
    pub variance: Option<f64>,
    /// Scale s mapping values to integers before noising.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub scale: f64,
    /// Account for conditional randomized rounding with failure probability β (needs --dimension).
    #[arg(long, value_name = "BETA")]
    pub rounding_beta: Option<f64>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Poisson sampling rate q per step, in (0, 1].
    #[arg(long, value_name = "Q")]
    pub sampling_rate: f64,
    /// Number of steps (rounds or SGD steps).
    #[arg(long, value_name = "T")]
    pub steps: u64,
    /// Target δ, in (0, 1).
    #[arg(long, value_name = "D")]
    pub delta: f64,
    /// Accountant.
    #[arg(long, value_enum, default_value = "rdp")]
    pub accountant: AccountantKind,
}

#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// ε spent by T steps of the Poisson-subsampled Gaussian mechanism.
    #[command(allow_negative_numbers = true)]
    Epsilon {
        #[command(flatten)]
        plan: PlanArgs,
        /// Noise multiplier σ (noise std / clipping norm), > 0 (rdp and pld).
        #[arg(long, value_name = "S")]
        noise_multiplier: Option<f64>,
        #[command(flatten)]
        skellam: SkellamArgs,
    },
    /// Smallest noise multiplier that keeps ε at or below a target.
    #[command(allow_negative_numbers = true)]
    Calibrate {
        #[command(flatten)]
        plan: PlanArgs,
        /// Target ε, > 0.
        #[arg(long, value_name = "E")]
        target_epsilon: f64,
    },
}
