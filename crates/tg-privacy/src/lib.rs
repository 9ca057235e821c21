//! Differential privacy for TensorGuard.
//!
//! Design decision: everything here is pure computation — no runtime, no I/O —
//! and every parameter arrives as a validated type ([`SamplingRate`],
//! [`NoiseMultiplier`], [`Delta`], [`Epsilon`]), so an accountant cannot be
//! asked a meaningless question. Accountants compose heterogeneous steps (q
//! and σ may change between rounds) and report ε the way the reference
//! implementations do, so the figures a compliance officer shows an auditor
//! can be reproduced with Opacus or Google's dp-accounting.

pub mod accountant;
pub mod calibrate;
pub mod noise;
mod params;
pub mod pld;
pub mod rdp;
pub mod skellam;
mod special;

pub use accountant::{AccountantKind, EpsilonReport, GaussianSteps};
pub use calibrate::calibrate_noise;
pub use noise::{LatticeGaussian, NoiseRng};
pub use params::{ClipNorm, Delta, Epsilon, NoiseMultiplier, Quantile, SamplingRate};
pub use rdp::{RdpAccountant, default_orders, rdp_to_epsilon, subsampled_gaussian_rdp};
pub use skellam::{SkellamParams, skellam_epsilon};

/// Errors from privacy computations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivacyError {
    /// A parameter is outside its domain.
    #[error("{what} = {value} is outside {range}")]
    OutOfRange {
        /// Which parameter.
        what: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range.
        range: &'static str,
    },
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Rng(String),
    /// No noise level reaches the target (e.g. δ too small for the steps).
    #[error(
        "no noise multiplier up to {max_sigma} reaches ε = {target_epsilon} (best: ε = {best_epsilon})"
    )]
    Unreachable {
        /// Target ε.
        target_epsilon: f64,
        /// Largest σ tried.
        max_sigma: f64,
        /// ε at that σ.
        best_epsilon: f64,
    },
}
