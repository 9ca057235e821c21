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
    /// Set when the job requires TEE attestation: a fresh nonce drawn for
    /// this peer, to be bound into the evidence's report data.
    pub attestation_nonce: Option<[u8; 32]>,
    /// The shape local data must have; agents check it before training.
    pub schema: Option<DataSchema>,
    /// The operator supplied the model (a safetensors file), not one of
    /// the built-in architectures that `model` names: only an agent whose
    /// learner brings its own model code (the Python SDK's) can train it,
    /// and `model`, `hidden` and `schema` do not apply.
    pub custom_model: bool,
    /// Set when the job's aggregator runs in a TEE: its session key and
    /// evidence binding it; agents verify it and seal their updates to it.
    pub aggregator: Option<crate::AggregatorEvidence>,
}

/// What a job's training data must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSchema {
    /// Features per example.
    pub features: u32,
    /// Number of classes: labels are integers in `0..classes`.
    pub classes: u32,
    /// Element type of the features.
    pub dtype: Dtype,
}

/// Element type of features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Dtype {
    /// 32-bit IEEE float, finite.
    F32,
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
    /// TEE evidence (a `tg_attest::Evidence`, encoded), when the offer asked
    /// for attestation. Opaque here; the coordinator decodes it with a
    /// size limit and verifies it.
    pub evidence: Option<Vec<u8>>,
    /// The agent's fleet certificate (its identity, signed by the fleet
    /// root), when its operator issued one.
    pub certificate: Option<Box<crate::Certificate>>,
}
