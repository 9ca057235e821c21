//! The coordinator's audit records: job creation with its encryption and
//! privacy parameters, every admission decision, every round, the end.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use tg_coordinator::admission::AuditSink;
use tg_trust::audit::AuditLog;
use tg_types::JobId;
use tg_types::record::RoundRecord;
use tg_types::spec::JobSpec;

use crate::keys::now_secs;

/// The node's audit log behind the coordinator's [`AuditSink`].
pub struct NodeAudit {
    log: Mutex<AuditLog>,
    metrics: Option<std::sync::Arc<tg_metrics::Metrics>>,
    /// Set when a record could not be written; the run reports it.
    pub failed: AtomicBool,
}

impl NodeAudit {
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

/// The parameters an auditor asks about, recorded when the job starts.
pub fn job_created(
    spec: &JobSpec,
    policy: Option<&tg_attest::Policy>,
    allow_simulated: bool,
    prg: &str,
) -> Value {
    let mut enc = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        enc.insert(k.into(), v);
    };
    put(
        "transport",
        json!(
            "libp2p: Noise XX (X25519, ChaCha20-Poly1305, SHA-256) with Yamux over TCP; QUIC v1 (TLS 1.3)"
        ),
    );
    put(
        "frame_signatures",
        json!(
            "Ed25519 over a domain tag, (job, round, stage, nonce, sender) and the canonical payload; nonces strictly increase"
        ),
    );
    match &spec.secure_aggregation {
        Some(s) => {
            put(
                "secure_aggregation",
                json!(
                    "SecAgg+: pairwise masks over Z_2^B, X25519 key agreement with HKDF-SHA-256, Shamir recovery of dropouts, shares sealed with ChaCha20-Poly1305"
                ),
            );
            put("secagg_bits", json!(s.bits));
            put("secagg_mask_prg", json!(prg));
            put("secagg_clip_l2", json!(s.clip));
            put("secagg_assumed_corrupt_fraction", json!(s.corrupt));
            put("secagg_assumed_dropout_fraction", json!(s.dropout));
            put("secagg_sparsity", json!(s.keep_fraction));
        }
        None => put(
            "secure_aggregation",
            json!("off: the coordinator sees each update"),
        ),
    }
    put(
        "keys_at_rest",
        json!("Argon2id (64 MiB, 3 passes) + XChaCha20-Poly1305; key files mode 0600"),
    );
    put(
        "audit_log",
        json!("SHA-256 hash chain, Ed25519 signatures, signed head"),
    );
    put(
        "models",
        json!("safetensors; SHA-256 of every committed model recorded per round"),
    );
    json!({
        "rounds": spec.rounds,
        "clients": spec.clients,
        "quorum": spec.min_clients,
        "strategy": spec.strategy,
        "model": spec.model,
        "dataset": spec.dataset,
        "encryption": enc,
        "privacy": spec.privacy.map(|p| json!({
            "target_epsilon": p.target_epsilon.get(),
            "delta": p.delta,
            "accountant": p.accountant,
            "mode": p.mode,
        })),
        "attestation": match policy {
            None => json!("not required"),
            Some(p) => json!({"required": true, "policy": p, "allow_simulated": allow_simulated}),
        },
    })
}

/// One round, with each participant's attestation outcome.
pub fn round(r: &RoundRecord, quorum: u32, attested: &BTreeMap<String, Value>) -> Value {
    let agents: Vec<Value> = r
        .participants_detail
        .iter()
        .map(|p| {
            json!({
                "agent": p.agent,
                "outcome": p.outcome,
                "attestation": attested.get(p.agent.as_str()).and_then(|a| a.get("label")).cloned(),
                "measurement": attested.get(p.agent.as_str()).and_then(|a| a.get("measurement")).cloned(),
            })
        })
        .collect();
    json!({
        "round": r.round,
        "status": r.status.as_str(),
        "selected": r.selected,
        "participants": r.participants,
        "quorum": quorum,
        "epsilon": r.epsilon,
        "model_sha256": r.model_sha256,
        "accuracy": r.accuracy,
        "reason": r.reason,
        "agents": agents,
    })
}
