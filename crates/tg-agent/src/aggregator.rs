//! The agent's check of an attested aggregator: before it joins a job whose
//! coordinator offers one, it verifies the coordinator's TEE evidence, its
//! binding to this job, the coordinator's peer id and the session key the
//! agent will seal its updates to, and its owner's policy.
//!
//! Design decision: the check runs on the offer, before the agent joins or
//! trains, with the same verifier and policies the coordinator applies to
//! agents (tg-attest), so an agent never sends an update — sealed or not —
//! to a coordinator whose evidence fails. A failure stops the agent with a
//! coded error (E094) naming every reason. Simulated evidence (a coordinator
//! without a TEE, started with `--allow-simulated`) proves nothing: an owner
//! who requires an attested aggregator (`--aggregator-policy`) accepts it
//! only with `--allow-simulated-aggregator`, and it is labelled UNTRUSTED in
//! the agent's status and every output. Only a TRUSTED aggregator counts as
//! keeping the update from the operator: sealed rounds to an UNTRUSTED one
//! are plaintext rounds under the owner's policy (`allow_plaintext`).

use std::time::SystemTime;

use tg_attest::{Evidence, Expected, ReasonCode, Status};
use tg_net::PeerId;
use tg_proto::AggregatorEvidence;
use tg_types::JobId;

use crate::AgentError;

/// The largest evidence an agent reads (as the coordinator bounds agents').
const MAX_EVIDENCE_BYTES: usize = 64 * 1024;

/// What the agent requires of an aggregator.
#[derive(Clone, Debug, Default)]
pub struct AggregatorTrust {
    /// Require an attested aggregator meeting this policy (`None`: not
    /// required, but evidence offered is still verified).
    pub policy: Option<tg_attest::Policy>,
    /// Accept simulated evidence (labelled UNTRUSTED) even when a policy is
    /// required: for tests only.
    pub allow_simulated: bool,
    /// The roots the verifier trusts.
    pub anchors: tg_attest::TrustAnchors,
}

/// The key an agent seals its updates to, and what it knows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealing {
    /// The aggregator's session key (X25519).
    pub key: [u8; 32],
    /// TRUSTED evidence that met the owner's policy (if any).
    pub trusted: bool,
    /// What the agent shows: `TRUSTED aggregator: …` or `UNTRUSTED: …`.
    pub label: String,
}

/// Checks the aggregator `offered` for `job` by `coordinator` at `at`: the
/// key to seal to (`None`: no aggregator offered and none required), or
/// why the agent refuses the job.
pub fn check(
    trust: &AggregatorTrust,
    job: JobId,
    coordinator: &PeerId,
    offered: Option<&AggregatorEvidence>,
    at: SystemTime,
) -> Result<Option<Sealing>, AgentError> {
    let refuse = |why: String| Err(AgentError::Aggregator(why));
    let Some(offered) = offered else {
        return match trust.policy {
            Some(_) => refuse(
                "the coordinator offers no attested aggregator, and this agent's owner requires one (--aggregator-policy)".into(),
            ),
            None => Ok(None),
        };
    };
    let evidence = match Evidence::from_bytes(&offered.evidence, MAX_EVIDENCE_BYTES) {
        Ok(e) => e,
        Err(r) => {
            return refuse(format!(
                "its evidence is unreadable ({}: {})",
                r.code, r.detail
            ));
        }
    };
    let binding = tg_attest::report_data(
        &tg_proto::aggregator_nonce(job),
        &coordinator.to_bytes(),
        &offered.session_key,
    );
    let verdict = tg_attest::appraise(
        &evidence,
        &trust.anchors,
        at,
        trust.policy.as_ref(),
        &Expected {
            report_data: Some(binding),
            // Simulated evidence must be signed by the coordinator itself.
            agent_key: tg_net::ed25519_key_of(coordinator),
        },
    );
    let measurement = verdict.measurement.clone().unwrap_or_default();
    let short = &measurement[..measurement.len().min(16)];
    // Genuine and bound, but only an owner's policy that pins the code (and,
    // by default, refuses debuggable TEEs and old TCBs) makes it TRUSTED:
    // any code in a TEE could be code that leaks the updates.
    if verdict.status == Status::Trusted
        && !counts_as_trusted(verdict.status, trust.policy.as_ref())
    {
        return Ok(Some(Sealing {
            key: offered.session_key,
            trusted: false,
            label: format!(
                "UNTRUSTED: genuine {} evidence bound to this job and key (measurement {short}…), but this agent's owner pins no aggregator code (--aggregator-policy with measurements), so any code may hold the key",
                verdict.hardware_type
            ),
        }));
    }
    if verdict.status == Status::Trusted {
        return Ok(Some(Sealing {
            key: offered.session_key,
            trusted: true,
            label: format!(
                "TRUSTED aggregator: {} evidence, measurement {short}…, bound to this job and its session key",
                verdict.hardware_type
            ),
        }));
    }
    // What simulated evidence cannot have (real hardware, a TCB, a
    // non-debug environment) is no reason to refuse it in a test; anything
    // else — a measurement the owner does not pin, a binding to another key,
    // job or coordinator, a forged signature — is.
    let simulated_only = verdict.hardware_type == tg_attest::HardwareType::Simulated
        && verdict.claims.is_some()
        && verdict.reasons.iter().all(|r| {
            matches!(
                r.code,
                ReasonCode::Simulated
                    | ReasonCode::HardwareNotAllowed
                    | ReasonCode::DebugEnabled
                    | ReasonCode::TcbBelowMinimum
            )
        });
    if simulated_only && (trust.allow_simulated || trust.policy.is_none()) {
        return Ok(Some(Sealing {
            key: offered.session_key,
            trusted: false,
            label: format!(
                "UNTRUSTED: simulated aggregator attestation (measurement {short}…; no TEE proves what code holds the session key, so the coordinator's operator may read this agent's updates)"
            ),
        }));
    }
    let reasons: Vec<String> = verdict
        .reasons
        .iter()
        .map(|r| format!("{}: {}", r.code, r.detail))
        .collect();
    refuse(format!(
        "its {} evidence failed: {}",
        verdict.hardware_type,
        reasons.join("; ")
    ))
}

/// Whether a verdict lets an aggregator keep updates from the operator: a
/// TRUSTED verdict under an owner's policy that pins the aggregator's code.
fn counts_as_trusted(status: Status, policy: Option<&tg_attest::Policy>) -> bool {
    status == Status::Trusted && policy.is_some_and(|p| !p.admits_any_code())
}

/// What sealing adds to a training reply's frame (the variant, round,
/// sender, ephemeral key and tag, generously): the envelope's budget is
/// measured on the unsealed frame, so it is kept this much lower.
const SEAL_OVERHEAD: u64 = 512;

impl crate::Agent {
    /// Seals this agent's training replies to `sealing`'s aggregator
    /// (`None`: sent as they are).
    pub fn with_sealing(mut self, sealing: Option<Sealing>) -> Self {
        self.sealing = sealing;
        self
    }

    /// Replaces the aggregator (a new offer of the same job: a restarted
    /// coordinator draws a new session key).
    pub fn set_sealing(&mut self, sealing: Option<Sealing>) {
        self.sealing = sealing;
    }

    /// The aggregator this agent seals to.
    pub fn sealing(&self) -> Option<&Sealing> {
        self.sealing.as_ref()
    }

    pub(crate) fn seal_overhead(&self) -> u64 {
        if self.sealing.is_some() {
            SEAL_OVERHEAD
        } else {
            0
        }
    }

    /// The owner's policy for a round: a round sealed to a TRUSTED
    /// aggregator does not leave in plaintext for anyone outside its TEE, so
    /// the owner's `allow_plaintext = false` does not refuse it.
    pub(crate) fn round_policy(&self) -> std::borrow::Cow<'_, crate::OwnerPolicy> {
        match &self.sealing {
            Some(s) if s.trusted && !self.policy.allow_plaintext => {
                let mut p = self.policy.clone();
                p.allow_plaintext = true;
                std::borrow::Cow::Owned(p)
            }
            _ => std::borrow::Cow::Borrowed(&self.policy),
        }
    }

    /// `reply` as it leaves: sealed to the aggregator when there is one
    /// (a reply that cannot be sealed is declined, never sent in the clear).
    pub(crate) fn sealed(&mut self, reply: tg_proto::TrainReply) -> tg_proto::ToCoordinator {
        let Some(key) = self.sealing.as_ref().map(|s| s.key) else {
            return tg_proto::ToCoordinator::Trained(reply);
        };
        let at = reply.at;
        let sealed = tg_proto::encode(&tg_proto::ToCoordinator::Trained(reply))
            .and_then(|plain| tg_proto::seal_reply(&key, at, &self.id, &plain));
        match sealed {
            Ok(sealed) => tg_proto::ToCoordinator::Sealed(sealed),
            Err(e) => self.declined(
                at,
                tg_proto::DeclineReason::TrainingFailed,
                &format!("cannot seal the update to the aggregator: {e}"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ed25519_dalek::SigningKey;

    fn coordinator() -> (SigningKey, PeerId) {
        let key = SigningKey::from_bytes(&[5; 32]);
        let peer = crate::net::peer_id_of(&key).unwrap();
        (key, peer)
    }

    fn job() -> JobId {
        JobId::from_bytes([4; 16])
    }

    /// Simulated evidence signed by `signer`, binding `job`, `peer` and
    /// `session_key`.
    fn simulated(
        signer: &SigningKey,
        job: JobId,
        peer: &PeerId,
        session_key: [u8; 32],
    ) -> AggregatorEvidence {
        let rd = tg_attest::report_data(
            &tg_proto::aggregator_nonce(job),
            &peer.to_bytes(),
            &session_key,
        );
        let ev = Evidence::Simulated(tg_attest::SimulatedEvidence::sign(signer, [7; 32], rd));
        AggregatorEvidence {
            session_key,
            evidence: ev.to_bytes(),
        }
    }

    fn policy(text: &str) -> tg_attest::Policy {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn only_a_policy_that_pins_the_code_makes_an_aggregator_trusted() {
        let any = policy("measurements = \"any\"");
        let pinned = policy(&format!("measurements = [\"{}\"]", "ab".repeat(48)));
        assert!(!counts_as_trusted(Status::Trusted, None));
        assert!(!counts_as_trusted(Status::Trusted, Some(&any)));
        assert!(counts_as_trusted(Status::Trusted, Some(&pinned)));
        assert!(!counts_as_trusted(Status::Untrusted, Some(&pinned)));
    }

    #[test]
    fn simulated_evidence_is_accepted_only_as_untrusted_and_only_as_allowed() {
        let (key, peer) = coordinator();
        let offer = simulated(&key, job(), &peer, [9; 32]);
        let open = AggregatorTrust::default();
        let s = check(&open, job(), &peer, Some(&offer), SystemTime::now())
            .unwrap()
            .unwrap();
        assert!(!s.trusted && s.label.starts_with("UNTRUSTED"), "{s:?}");
        assert_eq!(s.key, [9; 32]);
        // An owner who requires an attested aggregator refuses it…
        let strict = AggregatorTrust {
            policy: Some(policy("measurements = \"any\"")),
            ..Default::default()
        };
        let e = check(&strict, job(), &peer, Some(&offer), SystemTime::now()).unwrap_err();
        assert!(e.to_string().contains("simulated"), "{e}");
        // …unless simulated evidence is allowed for a test.
        let testing = AggregatorTrust {
            allow_simulated: true,
            ..strict.clone()
        };
        let s = check(&testing, job(), &peer, Some(&offer), SystemTime::now())
            .unwrap()
            .unwrap();
        assert!(s.label.starts_with("UNTRUSTED"));
        // Required, and none offered.
        let e = check(&strict, job(), &peer, None, SystemTime::now()).unwrap_err();
        assert!(
            e.to_string().contains("offers no attested aggregator"),
            "{e}"
        );
        assert_eq!(
            check(&open, job(), &peer, None, SystemTime::now()).unwrap(),
            None
        );
    }

    #[test]
    fn evidence_bound_to_another_key_job_or_coordinator_or_off_policy_is_refused() {
        let (key, peer) = coordinator();
        let testing = AggregatorTrust {
            allow_simulated: true,
            ..Default::default()
        };
        let refused = |offer: &AggregatorEvidence, trust: &AggregatorTrust| {
            check(trust, job(), &peer, Some(offer), SystemTime::now())
                .unwrap_err()
                .to_string()
        };
        // A host that swaps the session key for its own.
        let mut swapped = simulated(&key, job(), &peer, [9; 32]);
        swapped.session_key = [10; 32];
        assert!(
            refused(&swapped, &testing).contains("report_data_mismatch"),
            "{}",
            refused(&swapped, &testing)
        );
        // Evidence for another job, or another coordinator's.
        let other_job = simulated(&key, JobId::from_bytes([5; 16]), &peer, [9; 32]);
        assert!(refused(&other_job, &testing).contains("report_data_mismatch"));
        let other_key = SigningKey::from_bytes(&[6; 32]);
        let other_peer = crate::net::peer_id_of(&other_key).unwrap();
        let theirs = simulated(&other_key, job(), &other_peer, [9; 32]);
        let why = refused(&theirs, &testing);
        assert!(
            why.contains("report_data_mismatch") && why.contains("wrong_signer"),
            "{why}"
        );
        // Signed by someone else for this coordinator.
        let forged = simulated(&other_key, job(), &peer, [9; 32]);
        assert!(refused(&forged, &testing).contains("wrong_signer"));
        // A measurement the owner does not pin.
        let pinned = AggregatorTrust {
            policy: Some(policy(&format!("measurements = [\"{}\"]", "ab".repeat(48)))),
            allow_simulated: true,
            ..Default::default()
        };
        let why = refused(&simulated(&key, job(), &peer, [9; 32]), &pinned);
        assert!(why.contains("measurement"), "{why}");
        // Garbage evidence.
        let garbage = AggregatorEvidence {
            session_key: [9; 32],
            evidence: vec![0xff; 40],
        };
        assert!(refused(&garbage, &testing).contains("unreadable"));
    }
}
