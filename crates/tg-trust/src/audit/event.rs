//! Typed bodies of the job records the engine writes to the audit log and
//! the compliance report reads back: one schema for writer and reader, so a
//! renamed field is a compile error, not a blank column in an auditor's
//! report.
//!
//! The log itself stays untyped JSON lines (`grep` and `jq` read it, and
//! older logs must still verify); [`AuditEvent::read`] reads an entry's body
//! into its type, and an entry of a known kind whose body does not fit is
//! reported as such rather than skipped.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tg_types::record::{GateVerdict, JobSummary, ParticipantOutcome, RoundStatus};
use tg_types::spec::{DatasetSpec, ModelKind, StrategyConfig};

use super::{Entry, kind};

/// `job.created`: the parameters an auditor asks about, recorded when the
/// job starts (or resumes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobCreated {
    /// Rounds planned.
    pub rounds: u32,
    /// Clients planned.
    pub clients: u32,
    /// Updates a round needs to commit.
    pub quorum: u32,
    /// The aggregation strategy.
    pub strategy: StrategyConfig,
    /// The model.
    pub model: ModelKind,
    /// The coordinator's dataset (its held-out split gates every round).
    pub dataset: DatasetSpec,
    /// How data and keys are protected, parameter by parameter.
    pub encryption: Encryption,
    /// The privacy budget, when the job has one.
    pub privacy: Option<PrivacyParameters>,
    /// `"not required"`, or the TEE policy agents must meet.
    pub attestation: Value,
    /// The label of a simulated run (DP noise from a public seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<String>,
}

/// The cryptography a job runs with, as an auditor reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Encryption {
    /// The transport's handshake and ciphers.
    pub transport: String,
    /// What frame signatures cover.
    pub frame_signatures: String,
    /// Secure aggregation, or `off: …`.
    pub secure_aggregation: String,
    /// Bits per masked lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg_bits: Option<u32>,
    /// The mask generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg_mask_prg: Option<String>,
    /// L2 clip of each update before encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg_clip_l2: Option<f64>,
    /// Fraction of clients assumed to collude with the coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg_assumed_corrupt_fraction: Option<f64>,
    /// Fraction of clients assumed to drop out of a round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg_assumed_dropout_fraction: Option<f64>,
    /// Shared random-k: the fraction of coordinates sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secagg_sparsity: Option<f64>,
    /// How keys are kept at rest.
    pub keys_at_rest: String,
    /// How the audit log is protected.
    pub audit_log: String,
    /// How models are stored and identified.
    pub models: String,
}

/// The budget of a DP job, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacyParameters {
    /// The ε the job must not exceed.
    pub target_epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The accountant (`pld`, `rdp`, `skellam`).
    pub accountant: Value,
    /// The mechanism and its parameters.
    pub mode: Value,
}

/// `round.committed` / `round.failed`: one round, with each participant's
/// attestation outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundAudit {
    /// Round.
    pub round: u32,
    /// Committed or failed.
    pub status: RoundStatus,
    /// Agents selected.
    pub selected: u32,
    /// Agents whose updates were aggregated.
    pub participants: u32,
    /// The quorum.
    pub quorum: u32,
    /// ε of the job after this round (DP jobs).
    pub epsilon: Option<f64>,
    /// SHA-256 of the committed model.
    pub model_sha256: Option<String>,
    /// Held-out accuracy of the committed model.
    pub accuracy: Option<f64>,
    /// Why the round failed.
    pub reason: Option<String>,
    /// Each selected agent.
    pub agents: Vec<AgentAudit>,
    /// The rollout gate's verdict, with its success counts (jobs with a
    /// gate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateVerdict>,
    /// How the job's robust aggregator judged each update: the agent, its
    /// score and whether it reached the model (jobs with an aggregator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub screened: Vec<tg_types::record::ScreenRecord>,
    /// Changes of agents' standing the round caused (jobs with
    /// reputation): down-weighting, exclusion, recovery, each with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reputation: Vec<tg_types::reputation::ReputationChange>,
}

/// One selected agent in a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentAudit {
    /// The agent.
    pub agent: String,
    /// What became of its update.
    pub outcome: ParticipantOutcome,
    /// Its attestation label (`TRUSTED`, `UNTRUSTED`, …), if attested.
    pub attestation: Option<Value>,
    /// Its launch measurement, if attested.
    pub measurement: Option<Value>,
}

/// `model.rolled_back`: an operator moved a job's head back to an earlier
/// version; the job's next round starts from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRollbackAudit {
    /// The rollback's row in the store's `model_rollbacks` table (an entry
    /// whose row is missing was written just before a failed commit: the
    /// rollback did not happen).
    #[serde(default)]
    pub seq: i64,
    /// The version the head moved to (SHA-256 of its safetensors bytes).
    pub to: String,
    /// The round that committed it.
    pub to_round: u32,
    /// The head it replaced (`None`: the initial model).
    pub from: Option<String>,
    /// The last round the job had recorded, staged or charged.
    pub after_round: u32,
    /// Why, in the operator's words.
    pub reason: String,
    /// Who: an API token's label or the local user.
    pub actor: String,
}

/// A job record of the audit log, typed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AuditEvent {
    /// `job.created`.
    JobCreated(Box<JobCreated>),
    /// `round.committed` or `round.failed`.
    Round(RoundAudit),
    /// `job.finished`: the runner's summary.
    JobFinished(Box<JobSummary>),
    /// `model.rolled_back`.
    ModelRolledBack(ModelRollbackAudit),
}

impl AuditEvent {
    /// The entry kind it is written as.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::JobCreated(_) => kind::JOB_CREATED,
            AuditEvent::Round(r) if r.status == RoundStatus::Committed => kind::ROUND_COMMITTED,
            AuditEvent::Round(_) => kind::ROUND_FAILED,
            AuditEvent::JobFinished(_) => kind::JOB_FINISHED,
            AuditEvent::ModelRolledBack(_) => kind::MODEL_ROLLED_BACK,
        }
    }

    /// The entry's body.
    pub fn body(&self) -> Value {
        let v = match self {
            AuditEvent::JobCreated(c) => serde_json::to_value(c),
            AuditEvent::Round(r) => serde_json::to_value(r),
            AuditEvent::JobFinished(s) => serde_json::to_value(s),
            AuditEvent::ModelRolledBack(r) => serde_json::to_value(r),
        };
        v.unwrap_or(Value::Null)
    }

    /// Reads `entry` into its type: `None` for a kind this module does not
    /// type; `Some(Err(why))` for a typed kind whose body does not fit.
    pub fn read(entry: &Entry) -> Option<Result<Self, String>> {
        fn typed<T: for<'de> Deserialize<'de>>(v: &Value) -> Result<T, String> {
            T::deserialize(v).map_err(|e| e.to_string())
        }
        Some(match entry.kind.as_str() {
            kind::JOB_CREATED => typed(&entry.body).map(|c| AuditEvent::JobCreated(Box::new(c))),
            kind::ROUND_COMMITTED | kind::ROUND_FAILED => typed(&entry.body).map(AuditEvent::Round),
            kind::JOB_FINISHED => typed(&entry.body).map(|s| AuditEvent::JobFinished(Box::new(s))),
            kind::MODEL_ROLLED_BACK => typed(&entry.body).map(AuditEvent::ModelRolledBack),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tg_types::record::JobStatus;

    fn entry(kind: &str, body: Value) -> Entry {
        Entry {
            seq: 3,
            time: 0,
            kind: kind.into(),
            job: Some("j".into()),
            signer: String::new(),
            body,
            prev: String::new(),
            hash: String::new(),
            sig: String::new(),
        }
    }

    fn round(status: RoundStatus) -> RoundAudit {
        RoundAudit {
            round: 2,
            status,
            selected: 5,
            participants: 4,
            quorum: 3,
            epsilon: Some(1.5),
            model_sha256: Some("ab".into()),
            accuracy: Some(0.9),
            reason: None,
            agents: vec![AgentAudit {
                agent: "agent-000".into(),
                outcome: ParticipantOutcome::Contributed,
                attestation: Some(Value::String("TRUSTED".into())),
                measurement: None,
            }],
            gate: None,
            screened: Vec::new(),
            reputation: Vec::new(),
        }
    }

    #[test]
    fn what_is_written_reads_back_as_written_and_names_its_kind() {
        for (status, kind) in [
            (RoundStatus::Committed, kind::ROUND_COMMITTED),
            (RoundStatus::Failed, kind::ROUND_FAILED),
        ] {
            let e = AuditEvent::Round(round(status));
            assert_eq!(e.kind(), kind);
            let back = AuditEvent::read(&entry(e.kind(), e.body()))
                .unwrap()
                .unwrap();
            assert_eq!(back, e);
        }
        let finished = AuditEvent::JobFinished(Box::new(JobSummary::before_first_round(
            "j".into(),
            "fleet".into(),
            JobStatus::Stopped,
            "stopped".into(),
            3,
            None,
        )));
        let back = AuditEvent::read(&entry(kind::JOB_FINISHED, finished.body()));
        assert_eq!(back, Some(Ok(finished)));
    }

    #[test]
    fn a_body_that_does_not_fit_its_kind_is_reported_not_skipped() {
        let bad = entry(kind::ROUND_COMMITTED, serde_json::json!({"round": "two"}));
        assert!(matches!(AuditEvent::read(&bad), Some(Err(_))));
        // Kinds this module does not type are left to their readers.
        assert!(AuditEvent::read(&entry(kind::KEY_ROTATED, Value::Null)).is_none());
    }
}
