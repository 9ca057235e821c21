//! Joining a job: the coordinator offers, the agent asks to join, the
//! coordinator admits or refuses.

use serde::{Deserialize, Serialize};
use tg_types::JobId;
use tg_types::privacy::PrivacySpec;
use tg_types::spec::{ModelKind, TrainConfig};

/// What a coordinator tells a connecting agent about its job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// Job.
    pub job: JobId,
    /// Model architecture (the agent builds it for its own data's shape).
    pub model: ModelKind,
    /// Hidden width of the MLP.
    pub hidden: u32,
    /// Local training settings.
    pub train: TrainConfig,
    /// The job's privacy budget, if any (DP-SGD agents guard their own data with it).
    pub privacy: Option<PrivacySpec>,
    /// Rounds planned.
    pub rounds: u32,
    /// Whether unknown agents must present an enrollment token.
    pub enrollment_required: bool,
}

/// An agent's request to join a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The job offered.
    pub job: JobId,
    /// A human-readable name for dashboards and logs (not an identity).
    pub name: String,
    /// A one-time enrollment token, if the agent has one.
    pub token: Option<String>,
}
