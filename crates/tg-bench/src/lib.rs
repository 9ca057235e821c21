//! The benchmarks behind `tensorguard bench …`.
//!
//! Design decision: a benchmark is library code that drives the engine's own
//! path — the same decoder, the same fold, the same strategy the coordinator
//! runs — and returns a serde report; it never re-implements what it measures.
//! The binary only parses flags and prints the report. Reference tools
//! (Flower, Opacus, dp-accounting) run from `scripts/` in the same session and
//! are compared in docs/BENCHMARKS.md.

pub mod accountant;
pub mod aggregate;
pub mod api;
pub mod fleet;
pub mod memory;
pub mod robust;
pub mod secagg;
pub mod trust;

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
    /// The API benchmark's server or client failed.
    #[error("bench api: {0}")]
    Api(String),
    /// A round's result was wrong (a bug, not bad input).
    #[error("{0}")]
    Wrong(String),
    /// Parameters could not be built.
    #[error("parameters: {0}")]
    Params(#[from] tg_types::ParamsError),
    /// A process of the measured fleet failed (its logs are in the work dir).
    #[error("fleet: {0}")]
    Fleet(String),
}

/// Result alias for this crate.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;

/// Median wall time in milliseconds of `repeat` runs (at least one), and
/// the last run's result.
pub fn median_ms<T>(repeat: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut samples = Vec::with_capacity(repeat.max(1));
    let mut last = f();
    for _ in 0..repeat.max(1) {
        let t = std::time::Instant::now();
        last = f();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], last)
}
