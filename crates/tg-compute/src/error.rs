/// Errors of the compute network. Each maps to a stable code (E120–E127).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ComputeError {
    /// A task kind refused or failed its input.
    #[error(transparent)]
    Task(tg_tasks::TaskError),
    /// A model artifact is missing or its bytes do not match its pin.
    #[error("model artifact: {0}")]
    Artifact(String),
    /// Bytes from a peer do not decode, or are too large.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A result or receipt whose signature or digests do not hold.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// A task ran or waited past its timeout.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The network layer failed.
    #[error("network: {0}")]
    Net(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Io(String),
    /// Another node (another `task submit`, another `compute start`) holds
    /// this task store or wallet.
    #[error("another node of this data directory is running ({0} is locked)")]
    StoreInUse(String),
    /// The node has stopped.
    #[error("the compute node has stopped")]
    Stopped,
}

impl ComputeError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Task(
                tg_tasks::TaskError::ArtifactMissing { .. }
                | tg_tasks::TaskError::ArtifactHash { .. },
            )
            | Self::Artifact(_) => "E120",
            Self::Task(tg_tasks::TaskError::UnknownKind(_)) => "E123",
            Self::Task(tg_tasks::TaskError::Oversize { .. }) => "E122",
            Self::Task(_) | Self::Malformed(_) => "E121",
            Self::BadSignature(_) => "E124",
            Self::Timeout(_) => "E126",
            Self::Net(_) => "E080",
            Self::Io(_) => "E031",
            Self::StoreInUse(_) => "E127",
            Self::Stopped => "E072",
        }
    }
}
