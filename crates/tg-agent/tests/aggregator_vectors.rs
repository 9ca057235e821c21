//! The agent's check of an attested aggregator on real, public SEV-SNP and
//! TDX evidence (../shared/attestation-vectors): the agent verifies the
//! hardware's signature chain and collateral itself; genuine evidence that
//! was not made for this job, coordinator and session key is refused for
//! that reason alone, and a tampered report for its signature. Skips (with
//! a message) where the folder is absent.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tg_agent::aggregator::{AggregatorTrust, check};
use tg_attest::Evidence;
use tg_proto::AggregatorEvidence;
use tg_types::JobId;

fn vectors() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/attestation-vectors");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "SKIP: {} not found; these tests need the public attestation vectors beside the checkout",
            p.display()
        );
        None
    }
}

/// 2025-06-01T00:00:00Z, inside the SNP certificates' validity.
const SNP_AT: u64 = 1_748_736_000;
/// 2025-07-04T10:24:15Z, the TDX collateral's time.
const TDX_AT: u64 = 1_751_624_655;

fn refusal(ev: &Evidence, at: u64) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let peer = tg_agent::net::peer_id_of(&key).unwrap();
    let offered = AggregatorEvidence {
        session_key: [9; 32],
        evidence: ev.to_bytes(),
    };
    check(
        &AggregatorTrust::default(),
        JobId::from_bytes([4; 16]),
        &peer,
        Some(&offered),
        UNIX_EPOCH + Duration::from_secs(at),
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn real_snp_and_tdx_evidence_is_verified_agent_side() {
    let Some(v) = vectors() else { return };
    let read = |f: &str| std::fs::read(v.join(f)).unwrap();
    let snp = Evidence::SevSnp {
        report: read("snp/virtee-report-milan.bin"),
        certs: tg_attest::snp_cert_bundle(&read("snp/virtee-vcek-milan.der")).unwrap(),
    };
    let tdx = Evidence::Tdx {
        quote: read("dcap/tdx_quote"),
        collateral: Some(read("dcap/tdx_coll.json")),
    };
    for (ev, at, hw) in [(&snp, SNP_AT, "snp"), (&tdx, TDX_AT, "tdx")] {
        // Genuine, but bound to someone else's key: refused for that alone.
        let why = refusal(ev, at);
        assert!(why.contains(&format!("its {hw} evidence failed")), "{why}");
        assert!(why.contains("report_data_mismatch"), "{why}");
        assert!(!why.contains("; "), "one reason only: {why}");
    }
    // A tampered report fails its signature, on the agent.
    let mut bad = snp.clone();
    if let Evidence::SevSnp { report, .. } = &mut bad {
        report[0x90] ^= 1;
    }
    let why = refusal(&bad, SNP_AT);
    assert!(why.contains("signature"), "{why}");
}
