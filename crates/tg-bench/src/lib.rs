//! The benchmarks behind `tensorguard bench …`.
//!
//! Design decision: a benchmark is library code that drives the engine's own
//! path — the same decoder, the same fold, the same strategy the coordinator
//! runs — and returns a serde report; it never re-implements what it measures.
//! The binary only parses flags and prints the report. Reference tools
//! (Flower, Opacus, dp-accounting) run from `scripts/` in the same session and
//! are compared in docs/BENCHMARKS.md.

pub mod aggregate;
pub mod memory;
pub mod secagg;

/// Errors from a benchmark run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// The arguments describe no runnable benchmark.
    #[error("invalid benchmark arguments: {0}")]
    Args(String),
    /// Reading or writing the simulated wire failed.
    #[error("benchmark I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A frame could not be encoded or decoded.
    #[error("protocol: {0}")]
    Protocol(#[from] tg_proto::ProtoError),
    /// The strategy refused the updates.
    #[error("aggregation: {0}")]
    Strategy(#[from] tg_strategy::StrategyError),
    /// A round's result was wrong (a bug, not bad input).
    #[error("{0}")]
    Wrong(String),
    /// Parameters could not be built.
    #[error("parameters: {0}")]
    Params(#[from] tg_types::ParamsError),
}

/// Result alias for this crate.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
