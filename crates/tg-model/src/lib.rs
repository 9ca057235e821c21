//! Models, local training and data for TensorGuard, built on candle.
//!
//! Design decision: a model here is a *function of its parameters*. Parameters
//! live outside candle as [`tg_types::Parameters`] (named `f32` tensors); each
//! round an agent builds candle variables from the global parameters, trains,
//! and hands back `local − global`. Initialisation is drawn from a seeded RNG,
//! never from candle's own, so `--seed` reproduces a run bit for bit.
//!
//! Data: [`dataset`] holds the embedded UCI digits set and loaders for MNIST
//! IDX files and CSV; [`partition`] splits a training set among clients (IID,
//! Dirichlet label skew, shards), deterministically under a seed.

pub mod dataset;
mod dp_sgd;
mod loaders;
pub mod net;
pub mod partition;
pub mod train;

pub use dataset::{Dataset, DatasetSplit, load_dataset};
pub use net::{ModelShape, init_parameters};
pub use train::{Evaluation, LocalData, LocalOutcome, evaluate, train_local};

use std::path::PathBuf;

/// Errors loading data or training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A dataset file or directory does not exist.
    #[error("dataset file not found: {path}")]
    NotFound {
        /// Missing path.
        path: PathBuf,
    },
    /// A dataset file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A dataset file has malformed content at a known place.
    #[error("{path}:{line}: {reason}")]
    Malformed {
        /// File.
        path: PathBuf,
        /// 1-based line (or record) number; 0 when it concerns the whole file.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The data cannot be used as asked (too few samples, wrong shape for the model, …).
    #[error("{0}")]
    Unsuitable(String),
    /// Parameters do not fit the model.
    #[error(transparent)]
    Params(#[from] tg_types::ParamsError),
    /// The tensor library failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
