//! The agent's side of the launch gate: evidence for jobs that require a
//! TEE, and the data sentry that checks local data against the job's schema.
//!
//! Design decision: a job that requires attestation is refused *by the
//! agent itself* on a machine without a TEE, before any data is touched,
//! unless the operator explicitly chose `--insecure`; then the agent sends
//! simulated evidence signed by its own key and labels itself UNTRUSTED in
//! its status and logs. Real evidence binds the coordinator's nonce, this
//! agent's peer id and its signing key.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use tg_attest::Evidence;
use tg_attest::detect::{self, CollectError};
use tg_model::Dataset;
use tg_net::PeerId;
use tg_proto::DataSchema;

use crate::AgentError;

/// How this agent attests.
#[derive(Clone, Debug)]
pub struct AttestConfig {
    /// Root under which TEE interfaces are looked for (`/` in production).
    pub root: PathBuf,
    /// Run without a TEE, sending simulated (UNTRUSTED) evidence.
    pub insecure: bool,
    /// SEV-SNP: VCEK/VLEK (and intermediates, DER) when the host does not
    /// provide them with the report.
    pub certs: Vec<Vec<u8>>,
    /// TDX/SGX: DCAP collateral (JSON) to send with the quote.
    pub collateral: Option<Vec<u8>>,
    /// What this agent requires of an attested aggregator.
    pub aggregator: crate::aggregator::AggregatorTrust,
}

impl Default for AttestConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            insecure: false,
            certs: Vec::new(),
            collateral: None,
            aggregator: Default::default(),
        }
    }
}

/// Evidence for a job that asked for it, and the label this agent shows.
pub fn evidence_for(
    cfg: &AttestConfig,
    key: &SigningKey,
    me: &PeerId,
    nonce: &[u8; 32],
) -> Result<(Vec<u8>, String), AgentError> {
    let session_key = key.verifying_key().to_bytes();
    let rd = tg_attest::report_data(nonce, &me.to_bytes(), &session_key);
    match detect::collect(&cfg.root, &rd) {
        Ok(mut ev) => {
            match &mut ev {
                Evidence::SevSnp { certs, .. } if certs.is_empty() => certs.clone_from(&cfg.certs),
                Evidence::Tdx { collateral, .. } | Evidence::Sgx { collateral, .. }
                    if collateral.is_none() =>
                {
                    collateral.clone_from(&cfg.collateral);
                }
                _ => {}
            }
            let label = format!("TEE: {}", ev.hardware());
            Ok((ev.to_bytes(), label))
        }
        Err(CollectError::NoTee { .. }) if cfg.insecure => simulated(key, rd, "no TEE"),
        Err(CollectError::NoTee { root }) => Err(AgentError::NoTee(format!(
            "none of {CONFIGFS}, {TDX}, {SEV}, {GRAMINE} exists under {root}",
            CONFIGFS = detect::CONFIGFS_TSM,
            TDX = detect::TDX_GUEST,
            SEV = detect::SEV_GUEST,
            GRAMINE = detect::GRAMINE,
        ))),
        Err(e) if cfg.insecure => {
            tracing::warn!(
                "TEE present but unusable ({e}); sending simulated evidence because of --insecure"
            );
            simulated(key, rd, "TEE unusable")
        }
        Err(e) => Err(AgentError::NoTee(format!(
            "the TEE could not produce evidence: {e} (configfs-tsm needs Linux 6.7+ and write access)"
        ))),
    }
}

/// Simulated evidence: the agent's own key over the hash of its executable
/// and the binding.
fn simulated(key: &SigningKey, rd: [u8; 64], why: &str) -> Result<(Vec<u8>, String), AgentError> {
    let measurement = detect::executable_measurement().map_err(|e| {
        AgentError::NoTee(format!(
            "cannot hash this agent's executable for its simulated measurement: {e}"
        ))
    })?;
    let ev = Evidence::Simulated(tg_attest::SimulatedEvidence::sign(key, measurement, rd));
    Ok((
        ev.to_bytes(),
        format!("UNTRUSTED: simulated attestation (--insecure, {why})"),
    ))
}

/// Checks local data against the job's declared schema before training.
pub fn check_schema(data: &Dataset, schema: &DataSchema) -> Result<(), AgentError> {
    let fail = |what: String, fix: &str| Err(AgentError::Schema(format!("{what}; {fix}")));
    if data.num_features() != schema.features as usize {
        return fail(
            format!(
                "the job declares {} features per example, the local data has {}",
                schema.features,
                data.num_features()
            ),
            "point --dataset at data prepared for this job",
        );
    }
    if let Some(bad) = data.labels().iter().find(|l| **l >= schema.classes) {
        return fail(
            format!(
                "label {bad} is outside the job's classes 0..{}",
                schema.classes
            ),
            "relabel the local data to the job's classes",
        );
    }
    if let Some(i) = data.features().iter().position(|x| !x.is_finite()) {
        return fail(
            format!("feature value #{i} is not a finite f32 (NaN or infinite)"),
            "clean the local data: every feature must be a finite number",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tg_proto::Dtype;

    fn data(features: Vec<f32>, labels: Vec<u32>, n: usize) -> Dataset {
        Dataset::new(features, labels, n, 10, None).unwrap()
    }

    #[test]
    fn sentry_checks_features_labels_and_values() {
        let schema = DataSchema {
            features: 2,
            classes: 3,
            dtype: Dtype::F32,
        };
        assert!(check_schema(&data(vec![0.0, 1.0, 2.0, 3.0], vec![0, 2], 2), &schema).is_ok());
        let e = check_schema(&data(vec![0.0, 1.0, 2.0], vec![0], 3), &schema)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("declares 2 features") && e.contains("has 3"),
            "{e}"
        );
        let e = check_schema(&data(vec![0.0, 1.0], vec![7], 2), &schema)
            .unwrap_err()
            .to_string();
        assert!(e.contains("label 7 is outside"), "{e}");
        let e = check_schema(&data(vec![0.0, f32::NAN], vec![1], 2), &schema)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a finite"), "{e}");
    }

    #[test]
    fn no_tee_refuses_unless_insecure() {
        let root = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[4; 32]);
        let me = tg_net::peer_id_of(&key.verifying_key().to_bytes()).unwrap();
        let mut cfg = AttestConfig {
            root: root.path().to_owned(),
            ..AttestConfig::default()
        };
        let e = evidence_for(&cfg, &key, &me, &[1; 32]).unwrap_err();
        assert!(matches!(e, AgentError::NoTee(_)));
        cfg.insecure = true;
        let (bytes, label) = evidence_for(&cfg, &key, &me, &[1; 32]).unwrap();
        assert!(label.starts_with("UNTRUSTED"));
        let ev = Evidence::from_bytes(&bytes, 1 << 16).unwrap();
        let expected = tg_attest::Expected {
            report_data: Some(tg_attest::report_data(
                &[1; 32],
                &me.to_bytes(),
                &key.verifying_key().to_bytes(),
            )),
            agent_key: Some(key.verifying_key().to_bytes()),
        };
        let v = tg_attest::appraise(
            &ev,
            &tg_attest::TrustAnchors::default(),
            std::time::SystemTime::now(),
            None,
            &expected,
        );
        // Bound correctly, and still never trusted.
        assert_eq!(v.reasons.len(), 1, "{v:?}");
        assert_eq!(v.status, tg_attest::Status::Untrusted);
    }
}
