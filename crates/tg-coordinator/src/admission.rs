//! Who may join a job: allow-list, enrollment tokens, TEE attestation — and
//! where each decision is recorded.
//!
//! Design decision: attestation is one more admission rule, checked after
//! identity (allow-list or token), with the same outcome shape for every
//! decision so the audit log and dashboards show one kind of record. The
//! evidence must bind the nonce this coordinator sent *this* peer, the
//! peer's id and its signing key (see `tg_attest::report_data`), so
//! evidence cannot be replayed or lifted from another connection.
//! Simulated evidence is admitted only under an explicit operator switch
//! and is labelled UNTRUSTED in the outcome that every record carries.

use std::collections::HashSet;
use std::time::SystemTime;

use serde_json::{Value, json};
use tg_attest::{
    Evidence, Expected, HardwareType, Policy, ReasonCode, Status, TrustAnchors, Verdict,
};
use tg_net::PeerId;
use tg_types::JobId;

/// Who may join without attestation being considered.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// Peers admitted without a token.
    pub allowed: HashSet<PeerId>,
    /// Whether one-time enrollment tokens (from `enroll create`) admit peers.
    pub tokens: bool,
    /// The fleet root whose certificate every member must present (the
    /// agents that pin it would refuse rounds with an uncertified member).
    pub fleet_root: Option<[u8; 32]>,
}

/// Largest evidence accepted in a join (an SNP report with its VCEK is
/// about 3 KiB, a DCAP quote with collateral about 25 KiB).
pub const MAX_EVIDENCE_BYTES: usize = 64 * 1024;

/// A job's attestation requirement.
#[derive(Clone, Debug)]
pub struct AttestationGate {
    /// What genuine evidence must also satisfy.
    pub policy: Policy,
    /// Roots the evidence must chain to.
    pub anchors: TrustAnchors,
    /// Admit simulated evidence (labelled UNTRUSTED). Never in production.
    pub allow_simulated: bool,
}

/// The attestation part of an admission decision.
#[derive(Clone, Debug)]
pub struct AttestationOutcome {
    /// Whether attestation lets the peer in.
    pub admitted: bool,
    /// One line for logs and reports, e.g. `TRUSTED (snp)`.
    pub label: String,
    /// The verdict, when evidence was presented.
    pub verdict: Option<Verdict>,
}

impl AttestationOutcome {
    /// The outcome when the job does not require attestation.
    pub fn not_required() -> Self {
        Self {
            admitted: true,
            label: "not required".into(),
            verdict: None,
        }
    }

    /// As recorded in the audit log.
    pub fn to_json(&self) -> Value {
        json!({
            "label": self.label,
            "status": self.verdict.as_ref().map(|v| v.status),
            "hardware_type": self.verdict.as_ref().map(|v| v.hardware_type),
            "measurement": self.verdict.as_ref().and_then(|v| v.measurement.clone()),
            "reasons": self.verdict.as_ref().map(|v| v.reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>()),
            "simulated": self.verdict.as_ref().is_some_and(|v| v.hardware_type == HardwareType::Simulated),
        })
    }
}

/// Reasons that only say "this is not real hardware" — acceptable for
/// simulated evidence under `--allow-simulated`. Anything else (a bad
/// signature, a wrong nonce, a foreign key) refuses even then.
fn only_because_simulated(v: &Verdict) -> bool {
    v.hardware_type == HardwareType::Simulated
        && v.claims.is_some()
        && v.reasons.iter().all(|r| {
            matches!(
                r.code,
                ReasonCode::Simulated
                    | ReasonCode::HardwareNotAllowed
                    | ReasonCode::DebugEnabled
                    | ReasonCode::MeasurementNotAllowed
                    | ReasonCode::TcbBelowMinimum
            )
        })
}

impl AttestationGate {
    /// Rates the evidence a peer sent with its join.
    pub fn check(
        &self,
        nonce: &[u8; 32],
        peer: &PeerId,
        key: &[u8; 32],
        evidence: Option<&[u8]>,
        now: SystemTime,
    ) -> AttestationOutcome {
        let refuse = |label: String| AttestationOutcome {
            admitted: false,
            label,
            verdict: None,
        };
        let Some(bytes) = evidence else {
            return refuse("UNTRUSTED: no evidence (this job requires a TEE)".into());
        };
        let evidence = match Evidence::from_bytes(bytes, MAX_EVIDENCE_BYTES) {
            Ok(e) => e,
            Err(r) => return refuse(format!("UNTRUSTED: {r}")),
        };
        let expected = Expected {
            report_data: Some(tg_attest::report_data(nonce, &peer.to_bytes(), key)),
            agent_key: Some(*key),
        };
        let verdict =
            tg_attest::appraise(&evidence, &self.anchors, now, Some(&self.policy), &expected);
        let any_code = if self.policy.admits_any_code() {
            " — ANY CODE: the policy pins no measurement"
        } else {
            ""
        };
        let (admitted, label) = if verdict.status == Status::Trusted {
            (
                true,
                format!("TRUSTED ({}){any_code}", verdict.hardware_type),
            )
        } else if only_because_simulated(&verdict) && self.allow_simulated {
            (
                true,
                format!("SIMULATED — UNTRUSTED (admitted by --allow-simulated){any_code}"),
            )
        } else if only_because_simulated(&verdict) {
            (false, "UNTRUSTED: simulated evidence (start the coordinator with --allow-simulated to admit it for testing)".to_owned())
        } else {
            let reasons: Vec<String> = verdict.reasons.iter().map(ToString::to_string).collect();
            (false, format!("UNTRUSTED: {}", reasons.join("; ")))
        };
        AttestationOutcome {
            admitted,
            label,
            verdict: Some(verdict),
        }
    }
}

/// Where admission decisions and other events are recorded (the
/// coordinator's audit log). Recording must not fail the caller: an
/// implementation reports its own failures.
pub trait AuditSink: Send + Sync {
    /// Records one event for `job`.
    fn record(&self, kind: &str, job: JobId, body: Value);
    /// Records an operator's action (no job), reporting failure to the
    /// caller: an action that cannot be audited must not take effect.
    fn record_action(&self, kind: &str, job: Option<JobId>, body: Value) -> Result<(), String>;
}
