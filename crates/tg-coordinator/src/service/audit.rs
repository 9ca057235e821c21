//! The coordinator's audit records: job creation with its encryption and
//! privacy parameters, every admission decision, every round, the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::admission::AuditSink;
use serde_json::{Value, json};
use tg_trust::audit::AuditEvent;
use tg_trust::audit::event::{AgentAudit, Encryption, JobCreated, PrivacyParameters, RoundAudit};
use tg_trust::audit::{AuditLog, now_secs};
use tg_types::JobId;
use tg_types::record::RoundRecord;
use tg_types::spec::JobSpec;

/// The node's audit log behind the coordinator's [`AuditSink`].
pub struct NodeAudit {
    log: Mutex<AuditLog>,
    metrics: Option<std::sync::Arc<tg_metrics::Metrics>>,
    /// Set when a record could not be written; the run reports it.
    pub failed: AtomicBool,
}

impl NodeAudit {
    /// Records to `log`, counting write failures in `metrics`.
    pub fn new(log: AuditLog, metrics: Option<std::sync::Arc<tg_metrics::Metrics>>) -> Self {
        Self {
            log: Mutex::new(log),
            metrics,
            failed: AtomicBool::new(false),
        }
    }
}

impl AuditSink for NodeAudit {
    fn record(&self, kind: &str, job: JobId, body: Value) {
        if let Err(e) = self.record_action(kind, Some(job), body) {
            // Never silently: the operator sees it now and the run's summary says so.
            tracing::error!("cannot write the audit log: {e}");
            self.failed.store(true, Ordering::Relaxed);
        }
    }

    fn record_action(&self, kind: &str, job: Option<JobId>, body: Value) -> Result<(), String> {
        let job = job.map(|j| j.to_string());
        let result = match self.log.lock() {
            Ok(log) => log
                .append(kind, job.as_deref(), body, now_secs())
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(_) => Err("audit log lock poisoned".into()),
        };
        if let (Err(_), Some(m)) = (&result, &self.metrics) {
            m.audit_write_failed();
        }
        result
    }
}

/// Why a job's head may not be rolled back, from its recorded spec: a
/// strategy whose coordinator-side state (FedAdam's moments, SCAFFOLD's
/// control variate) would keep the replaced lineage's momentum.
pub fn rollback_refused_for(spec: &Value) -> Option<String> {
    let kind = spec
        .pointer("/strategy/kind")
        .or_else(|| spec.get("strategy"))
        .and_then(Value::as_str)?;
    matches!(kind, "fedadam" | "fed-adam" | "scaffold").then(|| {
        format!(
            "this job's strategy ({kind}) keeps state on the coordinator that a rollback would not undo: its next rounds would carry the replaced versions' momentum; start a new job from the version instead (GET /api/v1/models/{{sha256}}, [model] initial)"
        )
    })
}

/// The audit record of `r`, a rollback to the version that `round` committed.
pub fn model_rolled_back(r: &tg_store::Rollback, round: u32) -> AuditEvent {
    AuditEvent::ModelRolledBack(tg_trust::audit::event::ModelRollbackAudit {
        seq: r.seq,
        to: r.sha256.clone(),
        to_round: round,
        from: r.from_sha256.clone(),
        after_round: r.after_round,
        reason: r.reason.clone(),
        actor: r.actor.clone(),
    })
}

/// The parameters an auditor asks about, recorded when the job starts.
pub fn job_created(
    spec: &JobSpec,
    policy: Option<&tg_attest::Policy>,
    allow_simulated: bool,
    prg: &str,
    simulation: Option<String>,
) -> JobCreated {
    let secure = spec.secure_aggregation;
    JobCreated {
        rounds: spec.rounds,
        clients: spec.clients,
        quorum: spec.min_clients,
        strategy: spec.strategy,
        model: spec.model,
        dataset: spec.dataset.clone(),
        encryption: Encryption {
            transport: "libp2p: Noise XX (X25519, ChaCha20-Poly1305, SHA-256) with Yamux over TCP; QUIC v1 (TLS 1.3)".into(),
            frame_signatures: "Ed25519 over a domain tag, (job, round, stage, nonce, sender) and the SHA-512 digest of the canonical payload; nonces strictly increase".into(),
            secure_aggregation: match secure {
                Some(_) => "SecAgg+: pairwise masks over Z_2^B, X25519 key agreement with HKDF-SHA-256, Shamir recovery of dropouts, shares sealed with ChaCha20-Poly1305".into(),
                None => "off: the coordinator sees each update".into(),
            },
            secagg_bits: secure.map(|s| s.bits),
            secagg_mask_prg: secure.map(|_| prg.to_owned()),
            secagg_clip_l2: secure.map(|s| s.clip),
            secagg_assumed_corrupt_fraction: secure.map(|s| s.corrupt),
            secagg_assumed_dropout_fraction: secure.map(|s| s.dropout),
            secagg_sparsity: secure.and_then(|s| s.keep_fraction),
            keys_at_rest: "Argon2id (64 MiB, 3 passes) + XChaCha20-Poly1305; key files mode 0600".into(),
            audit_log: "SHA-256 hash chain, Ed25519 signatures, signed head".into(),
            models: "safetensors; SHA-256 of every committed model recorded per round".into(),
        },
        privacy: spec.privacy.map(|p| PrivacyParameters {
            target_epsilon: p.target_epsilon.get(),
            delta: p.delta.get(),
            accountant: json!(p.accountant),
            mode: json!(p.mode),
        }),
        attestation: match policy {
            None => json!("not required"),
            Some(p) => json!({"required": true, "policy": p, "allow_simulated": allow_simulated}),
        },
        simulation,
    }
}

/// One round, with each participant's attestation outcome.
pub fn round(r: &RoundRecord, quorum: u32, attested: &BTreeMap<String, Value>) -> RoundAudit {
    RoundAudit {
        round: r.round,
        status: r.status,
        selected: r.selected,
        participants: r.participants,
        quorum,
        epsilon: r.epsilon,
        model_sha256: r.model_sha256.clone(),
        accuracy: r.accuracy,
        reason: r.reason.clone(),
        agents: r
            .participants_detail
            .iter()
            .map(|p| {
                let a = attested.get(p.agent.as_str());
                AgentAudit {
                    agent: p.agent.to_string(),
                    outcome: p.outcome,
                    attestation: a.and_then(|a| a.get("label")).cloned(),
                    measurement: a.and_then(|a| a.get("measurement")).cloned(),
                }
            })
            .collect(),
        // Per-task counts tell which tasks the judges hold, and viewers can
        // query the log: the entry keeps the gate's totals only.
        gate: r.gate.clone().map(|mut g| {
            g.tasks.clear();
            g
        }),
        screened: r.screened.clone(),
        reputation: r.reputation.clone(),
    }
}

impl NodeAudit {
    /// Records a typed job event.
    pub fn event(&self, job: JobId, event: &AuditEvent) {
        self.record(event.kind(), job, event.body());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tg_types::record::{GateVerdict, RoundStatus, Successes};

    #[test]
    fn a_gate_rejection_is_audited_as_a_failed_round_with_its_figures() {
        let verdict = GateVerdict {
            candidate: Successes {
                successes: 2,
                episodes: 40,
            },
            current: Successes {
                successes: 32,
                episodes: 40,
            },
            difference_low: -0.86,
            difference_high: -0.56,
            margin: 0.0,
            passed: false,
            tasks: vec![tg_types::record::TaskSuccesses {
                task: "reach".into(),
                successes: 2,
                episodes: 40,
            }],
        };
        let mut r = crate::round::new_record(2);
        r.status = RoundStatus::Failed;
        r.reason = Some(format!("rollout gate rejected the candidate: {verdict}"));
        r.gate = Some(verdict.clone());
        let event = AuditEvent::Round(round(&r, 1, &BTreeMap::new()));
        assert_eq!(event.kind(), "round.failed");
        let body = event.body();
        assert_eq!(body["gate"]["candidate"]["successes"], 2);
        assert_eq!(body["gate"]["current"]["episodes"], 40);
        assert_eq!(body["gate"]["passed"], false);
        // Viewers can query the log: no per-task counts in it.
        assert!(body["gate"].get("tasks").is_none(), "{body}");
        assert!(!body.to_string().contains("reach"), "{body}");
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("2/40 (5.0%) vs current 32/40 (80.0%)")
        );
        // It reads back as written.
        let entry = tg_trust::audit::Entry {
            seq: 0,
            time: 0,
            kind: event.kind().into(),
            job: None,
            signer: String::new(),
            body,
            prev: String::new(),
            hash: String::new(),
            sig: String::new(),
        };
        match AuditEvent::read(&entry) {
            Some(Ok(AuditEvent::Round(a))) => assert_eq!(
                a.gate,
                Some(GateVerdict {
                    tasks: Vec::new(),
                    ..verdict
                })
            ),
            other => panic!("{other:?}"),
        }
    }
}
