//! Simulation mode: evidence signed by the agent's own key.
//!
//! Design decision: simulated evidence has the same shape as real evidence
//! (a measurement and 64 bytes of report data under a signature) so the
//! whole admission path runs on machines without a TEE — but the signature
//! is the agent's own Ed25519 key, which proves only who sent it, never what
//! hardware it ran on. [`crate::appraise`] therefore rates it UNTRUSTED
//! unconditionally; the statement names itself simulated inside the signed
//! bytes so no later relabelling can pass it off as anything else.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{Claims, HardwareType, Reason, ReasonCode};

const DOMAIN: &[u8] = b"tensorguard-simulated-evidence-v1 (NOT hardware-rooted)";

/// What a simulated agent states about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulatedStatement {
    /// The agent's Ed25519 public key, which signs the statement.
    pub agent_key: [u8; 32],
    /// SHA-256 of the agent's executable.
    pub measurement: [u8; 32],
    /// The 64-byte binding (see [`crate::report_data`]).
    pub report_data: Vec<u8>,
}

/// A signed [`SimulatedStatement`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulatedEvidence {
    /// The statement.
    pub statement: SimulatedStatement,
    /// Ed25519 signature over the domain tag and the encoded statement.
    pub signature: Vec<u8>,
}

impl SimulatedEvidence {
    /// Signs a statement with the agent's key.
    pub fn sign(key: &SigningKey, measurement: [u8; 32], report_data: [u8; 64]) -> Self {
        let statement = SimulatedStatement {
            agent_key: key.verifying_key().to_bytes(),
            measurement,
            report_data: report_data.to_vec(),
        };
        let signature = key.sign(&signed_bytes(&statement)).to_bytes().to_vec();
        Self {
            statement,
            signature,
        }
    }

    /// Checks the signature and returns the (untrusted) claims.
    pub fn verify(&self) -> Result<Claims, Reason> {
        let st = &self.statement;
        if st.report_data.len() != 64 {
            return Err(Reason::new(
                ReasonCode::Malformed,
                "report data must be 64 bytes",
            ));
        }
        let key = VerifyingKey::from_bytes(&st.agent_key)
            .map_err(|e| Reason::new(ReasonCode::Malformed, format!("agent key: {e}")))?;
        let sig = Signature::from_slice(&self.signature)
            .map_err(|e| Reason::new(ReasonCode::Malformed, format!("signature: {e}")))?;
        key.verify(&signed_bytes(st), &sig).map_err(|_| {
            Reason::new(
                ReasonCode::BadSignature,
                "simulated statement signature does not verify",
            )
        })?;
        Ok(Claims {
            hardware: HardwareType::Simulated,
            measurement: st.measurement.to_vec(),
            tcb: Vec::new(),
            tcb_status: None,
            advisories: Vec::new(),
            // Nothing stops the host from reading a process without a TEE.
            debug: true,
            report_data: st.report_data.clone(),
            signer: format!(
                "agent key {} (simulation, untrusted)",
                hex::encode(st.agent_key)
            ),
            extra: Vec::new(),
        })
    }
}

fn signed_bytes(st: &SimulatedStatement) -> Vec<u8> {
    let mut out = DOMAIN.to_vec();
    out.extend(postcard::to_allocvec(st).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Expected, Status, TrustAnchors, appraise};
    use std::time::SystemTime;

    #[test]
    fn verifies_but_is_never_trusted() {
        let key = SigningKey::from_bytes(&[5u8; 32]);
        let ev = crate::Evidence::Simulated(SimulatedEvidence::sign(&key, [1u8; 32], [2u8; 64]));
        let v = appraise(
            &ev,
            &TrustAnchors::default(),
            SystemTime::now(),
            None,
            &Expected {
                report_data: Some([2u8; 64]),
                agent_key: Some(key.verifying_key().to_bytes()),
            },
        );
        assert_eq!(v.status, Status::Untrusted);
        assert_eq!(v.reasons.len(), 1);
        assert_eq!(v.reasons[0].code, ReasonCode::Simulated);

        let other = SigningKey::from_bytes(&[6u8; 32]);
        let v = appraise(
            &ev,
            &TrustAnchors::default(),
            SystemTime::now(),
            None,
            &Expected {
                report_data: Some([3u8; 64]),
                agent_key: Some(other.verifying_key().to_bytes()),
            },
        );
        let codes: Vec<_> = v.reasons.iter().map(|r| r.code).collect();
        assert!(codes.contains(&ReasonCode::WrongSigner));
        assert!(codes.contains(&ReasonCode::ReportDataMismatch));
    }

    #[test]
    fn tampered_statement_fails() {
        let key = SigningKey::from_bytes(&[5u8; 32]);
        let mut ev = SimulatedEvidence::sign(&key, [1u8; 32], [2u8; 64]);
        ev.statement.measurement[0] ^= 1;
        assert_eq!(ev.verify().unwrap_err().code, ReasonCode::BadSignature);
    }
}
