//! Stable error codes and advice for people.
//!
//! Design decision: library crates return typed errors that say what went
//! wrong in their own terms; this crate is the one place that turns each of
//! them into a stable code and a sentence a person can act on —
//! `error[E0xx]: what happened — why — what to do`. The CLI prints these and
//! the Python SDK raises them, so a code means the same thing wherever it is
//! met, and docs/ERRORS.md lists them once. Nothing here does I/O.

use std::fmt;

mod from;
pub use from::{
    from_agent, from_declined, from_inproc, from_job, from_model, from_privacy, from_store,
    from_trust,
};

/// A stable error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    /// E001 config file unreadable or invalid TOML.
    ConfigInvalid,
    /// E002 invalid command line.
    Usage,
    /// E003 unknown key in config.
    ConfigUnknownKey,
    /// E010 dataset file missing.
    DatasetMissing,
    /// E011 malformed dataset content.
    DatasetMalformed,
    /// E012 dataset/model unsuitable.
    DatasetUnsuitable,
    /// E020 invalid argument value.
    InvalidValue,
    /// E021 quorum larger than clients.
    QuorumTooLarge,
    /// E030 data dir not writable.
    DataDirUnwritable,
    /// E031 store error.
    Store,
    /// E032 run not found.
    RunNotFound,
    /// E033 a job has no committed model version with this digest.
    VersionNotFound,
    /// E034 the model registry refused a change (e.g. a rollback to the head).
    RegistryRefused,
    /// E040 would overwrite existing files.
    AlreadyExists,
    /// E041 key file permissions too open.
    KeyPermissions,
    /// E042 key file malformed.
    KeyInvalid,
    /// E060 a privacy parameter is out of its domain.
    PrivacyParam,
    /// E061 a privacy target cannot be met.
    PrivacyUnreachable,
    /// E050 doctor found problems.
    DoctorFailed,
    /// E070 the coordinator refused to admit the agent.
    NotAdmitted,
    /// E071 the job already finished.
    JobFinished,
    /// E072 no background agent is running.
    NotRunning,
    /// E080 the network could not be started or used.
    Network,
    /// E043 no key passphrase available.
    NoPassphrase,
    /// E044 the passphrase does not open the key.
    WrongPassphrase,
    /// E045 keyring or HSM operation refused.
    Keyring,
    /// E047 the audit log cannot be read or written.
    AuditLog,
    /// E048 the audit log failed verification.
    AuditTampered,
    /// E090 evidence verified as UNTRUSTED (the verdict is on stdout).
    Untrusted,
    /// E091 evidence or its certificates/collateral unreadable.
    EvidenceUnreadable,
    /// E092 the job requires a TEE and this machine has none.
    NoTee,
    /// E094 the coordinator's attested aggregator failed this agent's
    /// check (or none was offered and the owner requires one).
    AggregatorRefused,
    /// E013 local data does not match the job's declared schema.
    SchemaMismatch,
    /// E062 a round would take the data owner's ε beyond its budget.
    BudgetExhausted,
    /// E110 a round is below the data owner's floors (plaintext refused,
    /// too few participants, too little noise, an uncertified participant).
    OwnerFloor,
    /// E112 the agent declined a round for another reason (its learner
    /// failed, a replay, a secure-aggregation abort).
    RoundDeclined,
    /// E120 a model artifact is missing or does not match its pinned SHA-256.
    ArtifactRefused,
    /// E121 a malformed compute task or message.
    TaskMalformed,
    /// E122 a compute task's input is larger than its kind accepts.
    TaskOversize,
    /// E123 a compute task of a kind this node does not know.
    TaskKindUnknown,
    /// E124 a result or receipt whose signature or digests do not hold.
    SignatureRefused,
    /// E125 the worker refuses work: over its CPU, memory or queue caps, or not serving.
    OverCaps,
    /// E126 a compute task failed: timed out, or its workers disagreed.
    TaskFailed,
    /// E127 another compute node of this data directory is running (its task store or wallet is locked).
    TaskStoreInUse,
    /// E099 internal error.
    Internal,
}

impl Code {
    /// The printed code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ConfigInvalid => "E001",
            Code::Usage => "E002",
            Code::ConfigUnknownKey => "E003",
            Code::DatasetMissing => "E010",
            Code::DatasetMalformed => "E011",
            Code::DatasetUnsuitable => "E012",
            Code::InvalidValue => "E020",
            Code::QuorumTooLarge => "E021",
            Code::DataDirUnwritable => "E030",
            Code::Store => "E031",
            Code::RunNotFound => "E032",
            Code::VersionNotFound => "E033",
            Code::RegistryRefused => "E034",
            Code::AlreadyExists => "E040",
            Code::KeyPermissions => "E041",
            Code::KeyInvalid => "E042",
            Code::DoctorFailed => "E050",
            Code::PrivacyParam => "E060",
            Code::PrivacyUnreachable => "E061",
            Code::NotAdmitted => "E070",
            Code::JobFinished => "E071",
            Code::NotRunning => "E072",
            Code::Network => "E080",
            Code::NoPassphrase => "E043",
            Code::WrongPassphrase => "E044",
            Code::Keyring => "E045",
            Code::AuditLog => "E047",
            Code::AuditTampered => "E048",
            Code::Untrusted => "E090",
            Code::EvidenceUnreadable => "E091",
            Code::NoTee => "E092",
            Code::AggregatorRefused => "E094",
            Code::SchemaMismatch => "E013",
            Code::BudgetExhausted => "E062",
            Code::OwnerFloor => "E110",
            Code::RoundDeclined => "E112",
            Code::ArtifactRefused => "E120",
            Code::TaskMalformed => "E121",
            Code::TaskOversize => "E122",
            Code::TaskKindUnknown => "E123",
            Code::SignatureRefused => "E124",
            Code::OverCaps => "E125",
            Code::TaskFailed => "E126",
            Code::TaskStoreInUse => "E127",
            Code::Internal => "E099",
        }
    }
}

/// An error for a person: what happened, why, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError {
    /// Its stable code.
    pub code: Code,
    /// What happened.
    pub what: String,
    /// Why.
    pub why: String,
    /// What to do about it.
    pub fix: String,
}

impl UserError {
    /// An error from its four parts.
    pub fn new(
        code: Code,
        what: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            code,
            what: what.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }

    /// Exit status: 2 for input the user can correct, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self.code {
            Code::Internal
            | Code::Store
            | Code::DoctorFailed
            | Code::Untrusted
            | Code::AuditTampered => 1,
            _ => 2,
        }
    }

    /// `{"error": {"code", "what", "why", "fix"}}`, as `--json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code.as_str(), "what": self.what, "why": self.why, "fix": self.fix}})
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error[{}]: {} — {} — {}",
            self.code.as_str(),
            self.what,
            self.why,
            self.fix
        )
    }
}

impl std::error::Error for UserError {}

/// An invalid value (E020).
pub fn invalid(
    what: impl Into<String>,
    why: impl Into<String>,
    fix: impl Into<String>,
) -> UserError {
    UserError::new(Code::InvalidValue, what, why, fix)
}
