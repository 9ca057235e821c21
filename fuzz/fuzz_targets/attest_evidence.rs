//! Untrusted attestation input — an encoded `Evidence` from a join, raw
//! reports/quotes/collateral/certificates as an operator might pass them, a
//! host's SNP certificate table, a policy file — must give a verdict or an
//! error, never a panic, and never TRUSTED without real signatures.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use tg_attest::{Evidence, Expected, Policy, Status, TrustAnchors, appraise, verify};

fn anchors() -> &'static TrustAnchors {
    static A: OnceLock<TrustAnchors> = OnceLock::new();
    A.get_or_init(TrustAnchors::default)
}

fuzz_target!(|data: &[u8]| {
    let at = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    if let Ok(ev) = Evidence::from_bytes(data, 1 << 20) {
        let v = appraise(&ev, anchors(), at, Some(&Policy::default()), &Expected::default());
        // Random bytes can at best be validly self-signed simulated
        // evidence, which is never trusted.
        assert_eq!(v.status, Status::Untrusted);
    }
    let (a, b) = data.split_at(data.len() / 2);
    for ev in [
        Evidence::SevSnp { report: a.to_vec(), certs: vec![b.to_vec()] },
        Evidence::Tdx { quote: a.to_vec(), collateral: Some(b.to_vec()) },
        Evidence::Sgx { quote: b.to_vec(), collateral: Some(a.to_vec()) },
    ] {
        assert!(verify(&ev, anchors(), at).is_err());
    }
    let _ = tg_attest::detect::snp_cert_table(data);
    let _ = tg_attest::snp_cert_bundle(data);
    let _ = serde_json::from_slice::<Policy>(data);
});
