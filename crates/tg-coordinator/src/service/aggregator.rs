//! The coordinator as an attested aggregator: a session key drawn in the
//! TEE the round logic runs in, and evidence binding it.
//!
//! Design decision: the key is drawn when the job starts (a restart draws a
//! new one; agents re-check the new offer) and never leaves this process.
//! The evidence's report data binds the job, this node's peer id and the
//! session key (`tg_attest::report_data(aggregator_nonce(job), peer id,
//! key)`), so agents can tell that the key they seal to is held by the code
//! the evidence measures. Without a TEE the coordinator runs it only under
//! `--allow-simulated`: the evidence is then signed by this node's own key
//! over its executable's hash and proves nothing, which every output says
//! (UNTRUSTED), and agents treat its rounds as plaintext rounds.

use std::path::Path;
use std::sync::Arc;

use tg_attest::Evidence;
use tg_attest::detect::{self, CollectError};
use tg_proto::{AggregatorEvidence, SessionSecret};
use tg_types::JobId;

use super::ServiceError;

/// The label every output of a simulated attested aggregator carries.
pub const SIMULATED_LABEL: &str = "SIMULATED — UNTRUSTED: attested aggregator without a TEE (--allow-simulated); its evidence is signed by the coordinator's own key, so nothing keeps the operator from reading the updates";

/// An attested aggregator's key and what it offers agents.
#[derive(Debug)]
pub struct Attested {
    /// The session secret updates are sealed to.
    pub secret: Arc<SessionSecret>,
    /// Its public key and evidence, for the offer.
    pub offer: AggregatorEvidence,
    /// What the operator and the audit log are told.
    pub label: String,
    /// Whether the evidence is simulated.
    pub simulated: bool,
}

/// Draws the session key and collects evidence for it under `root` (where
/// TEE interfaces are looked for: `/` in production).
pub fn attest(
    job: JobId,
    key: &ed25519_dalek::SigningKey,
    me: &tg_net::PeerId,
    root: &Path,
    allow_simulated: bool,
) -> Result<Attested, ServiceError> {
    let secret = SessionSecret::generate().map_err(|e| ServiceError::NoTee {
        job,
        why: e.to_string(),
    })?;
    let rd = tg_attest::report_data(
        &tg_proto::aggregator_nonce(job),
        &me.to_bytes(),
        &secret.public(),
    );
    let simulated = |why: String| -> Result<Evidence, ServiceError> {
        if !allow_simulated {
            return Err(ServiceError::NoTee { job, why });
        }
        let measurement = detect::executable_measurement().map_err(|e| ServiceError::NoTee {
            job,
            why: format!(
                "cannot hash this coordinator's executable for its simulated measurement: {e}"
            ),
        })?;
        Ok(Evidence::Simulated(tg_attest::SimulatedEvidence::sign(
            key,
            measurement,
            rd,
        )))
    };
    let evidence = match detect::collect(root, &rd) {
        Ok(ev) => ev,
        Err(CollectError::NoTee { root }) => simulated(format!("no TEE interface under {root}"))?,
        Err(e) => simulated(format!("the TEE could not produce evidence: {e}"))?,
    };
    let is_simulated = matches!(evidence, Evidence::Simulated(_));
    let label = if is_simulated {
        SIMULATED_LABEL.to_owned()
    } else {
        format!(
            "attested aggregator: {} evidence binds this job, peer id {me} and session key {}",
            evidence.hardware(),
            hex::encode(&secret.public()[..8])
        )
    };
    Ok(Attested {
        offer: AggregatorEvidence {
            session_key: secret.public(),
            evidence: evidence.to_bytes(),
        },
        secret: Arc::new(secret),
        label,
        simulated: is_simulated,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn without_a_tee_only_a_labelled_simulation_runs() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let me = tg_net::PeerId::random();
        let empty = tempfile::tempdir().unwrap();
        let job = JobId::from_bytes([1; 16]);
        let e = attest(job, &key, &me, empty.path(), false).unwrap_err();
        assert!(matches!(e, ServiceError::NoTee { .. }), "{e:?}");
        let a = attest(job, &key, &me, empty.path(), true).unwrap();
        assert!(a.simulated && a.label.contains("UNTRUSTED"));
        assert_eq!(a.offer.session_key, a.secret.public());
        let ev = Evidence::from_bytes(&a.offer.evidence, 1 << 16).unwrap();
        assert_eq!(ev.hardware(), tg_attest::HardwareType::Simulated);
    }
}
