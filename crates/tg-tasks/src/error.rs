use std::path::PathBuf;

/// Why a task could not be validated or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// A model artifact is missing from the model directory.
    #[error("model artifact {file} of {model} is missing from {dir}")]
    ArtifactMissing {
        /// Model name.
        model: &'static str,
        /// File name.
        file: &'static str,
        /// Directory searched.
        dir: PathBuf,
    },
    /// A model artifact's bytes do not hash to the pinned SHA-256.
    #[error("model artifact {what} hashes to {got}, not the pinned {want}")]
    ArtifactHash {
        /// File or artifact.
        what: String,
        /// Pinned digest (hex).
        want: String,
        /// Digest of the bytes seen (hex).
        got: String,
    },
    /// An artifact could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The task names a kind this node does not know.
    #[error("unknown task kind {0:?}")]
    UnknownKind(String),
    /// The task's input is malformed for its kind.
    #[error("malformed task input: {0}")]
    Malformed(String),
    /// The task's input is larger than a kind accepts.
    #[error("task input too large: {what} is {got}, at most {max}")]
    Oversize {
        /// What was too large.
        what: &'static str,
        /// Size seen.
        got: usize,
        /// Limit.
        max: usize,
    },
    /// The model failed while running (tokenizer or tensor error).
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<candle_core::Error> for TaskError {
    fn from(e: candle_core::Error) -> Self {
        TaskError::Inference(e.to_string())
    }
}
