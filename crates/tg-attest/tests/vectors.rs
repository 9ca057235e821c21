//! Real, public attestation evidence from ../shared/attestation-vectors:
//! every vector verifies at its stated time, and tampered variants are
//! rejected with the right reason. Skips (with a message) where the folder
//! is absent.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use crate::common::*;

use tg_attest::{
    Evidence, Expected, HardwareType, Policy, ReasonCode, SnpAnchors, Status, TrustAnchors,
    appraise, verify,
};

#[test]
fn every_vector_verifies_at_its_time() {
    let Some(v) = vectors() else { return };
    let anchors = TrustAnchors::default();
    let cases = [
        (
            snp(
                &v,
                "snp/virtee-report-milan.bin",
                &["snp/virtee-vcek-milan.der"],
            ),
            SNP_AT,
        ),
        (
            snp(&v, "snp/trustee-report.bin", &["snp/trustee-vcek.der"]),
            SNP_AT,
        ),
        (
            snp(
                &v,
                "snp/trustee-vlek-report.bin",
                &["snp/trustee-vlek.der", "snp/milan-ask-ark-asvk.pem"],
            ),
            SNP_AT,
        ),
        (
            dcap(
                &v,
                HardwareType::Sgx,
                "dcap/sgx_quote",
                "dcap/sgx_coll.json",
            ),
            SGX_AT,
        ),
        (
            dcap(
                &v,
                HardwareType::Tdx,
                "dcap/tdx_quote",
                "dcap/tdx_coll.json",
            ),
            TDX_AT,
        ),
    ];
    for (ev, t) in &cases {
        let claims =
            verify(ev, &anchors, at(t)).unwrap_or_else(|r| panic!("{:?}: {r}", ev.hardware()));
        assert_eq!(claims.hardware, ev.hardware());
        assert_eq!(claims.report_data.len(), 64);
        assert!(!claims.measurement.is_empty());
        // With no policy, genuine evidence is TRUSTED.
        let verdict = appraise(ev, &anchors, at(t), None, &Expected::default());
        assert_eq!(verdict.status, Status::Trusted, "{verdict:?}");
    }
    let sgx = verify(&cases[3].0, &anchors, at(SGX_AT)).unwrap();
    assert_eq!(
        sgx.tcb_status.as_deref(),
        Some("ConfigurationAndSWHardeningNeeded")
    );
    assert_eq!(sgx.advisories, ["INTEL-SA-00289", "INTEL-SA-00615"]);
    let tdx = verify(&cases[4].0, &anchors, at(TDX_AT)).unwrap();
    assert_eq!(tdx.tcb_status.as_deref(), Some("UpToDate"));
    assert_eq!(tdx.measurement.len(), 48);
    let vlek = verify(&cases[2].0, &anchors, at(SNP_AT)).unwrap();
    assert!(vlek.signer.contains("VLEK"), "{}", vlek.signer);
}

/// Each tampered variant, the time it is checked at, and the reason it
/// must be rejected for.
#[test]
fn tampered_variants_are_rejected_with_the_right_reason() {
    let Some(v) = vectors() else { return };
    let anchors = TrustAnchors::default();
    let virtee = || {
        snp(
            &v,
            "snp/virtee-report-milan.bin",
            &["snp/virtee-vcek-milan.der"],
        )
    };
    let flip = |mut ev: Evidence, off: usize| {
        snp_report_mut(&mut ev)[off] ^= 0x01;
        ev
    };
    let mut cases: Vec<(&str, Evidence, SystemTime, ReasonCode)> = vec![
        (
            "SNP: bit flip in report_data (0x50)",
            flip(virtee(), 0x50),
            at(SNP_AT),
            ReasonCode::BadSignature,
        ),
        (
            "SNP: bit flip in measurement (0x90)",
            flip(virtee(), 0x90),
            at(SNP_AT),
            ReasonCode::BadSignature,
        ),
        (
            "SNP: bit flip in host_data (0xC0)",
            flip(virtee(), 0xC0),
            at(SNP_AT),
            ReasonCode::BadSignature,
        ),
        (
            "SNP: bit flip in chip_id (0x1A0)",
            flip(virtee(), 0x1A0),
            at(SNP_AT),
            ReasonCode::BadSignature,
        ),
        (
            "SNP: bit flip in the last signed byte",
            flip(virtee(), 0x29F),
            at(SNP_AT),
            ReasonCode::BadSignature,
        ),
        (
            "SNP: bit flip in the signature (0x2A0)",
            flip(virtee(), 0x2A0),
            at(SNP_AT),
            ReasonCode::BadSignature,
        ),
        (
            "SNP: swapped VCEK (another chip's)",
            snp(&v, "snp/virtee-report-milan.bin", &["snp/trustee-vcek.der"]),
            at(SNP_AT),
            ReasonCode::BadSignature,
        ),
        (
            "SNP: invalid VCEK for the trustee report",
            snp(
                &v,
                "snp/trustee-report.bin",
                &["snp/trustee-vcek-invalid-new.der"],
            ),
            at(SNP_AT),
            ReasonCode::UntrustedChain,
        ),
        (
            "SNP: VLEK without its ASVK",
            snp(&v, "snp/trustee-vlek-report.bin", &["snp/trustee-vlek.der"]),
            at(SNP_AT),
            ReasonCode::UntrustedChain,
        ),
        (
            "SNP: VLEK checked after it expired",
            snp(
                &v,
                "snp/trustee-vlek-report.bin",
                &["snp/trustee-vlek.der", "snp/milan-ask-ark-asvk.pem"],
            ),
            at("2026-11-22T00:00:00Z"),
            ReasonCode::CertificateExpired,
        ),
        (
            "SNP: no certificate at all",
            Evidence::SevSnp {
                report: read(&v, "snp/virtee-report-milan.bin"),
                certs: vec![],
            },
            at(SNP_AT),
            ReasonCode::MissingCertificate,
        ),
        (
            "SGX: collateral expired at the chosen time (400 days later)",
            dcap(
                &v,
                HardwareType::Sgx,
                "dcap/sgx_quote",
                "dcap/sgx_coll.json",
            ),
            at(SGX_AT) + Duration::from_secs(400 * 86_400),
            ReasonCode::CollateralExpired,
        ),
        (
            "TDX: collateral expired at the chosen time (400 days later)",
            dcap(
                &v,
                HardwareType::Tdx,
                "dcap/tdx_quote",
                "dcap/tdx_coll.json",
            ),
            at(TDX_AT) + Duration::from_secs(400 * 86_400),
            ReasonCode::CollateralExpired,
        ),
        (
            "TDX: the outdated-TCB quote",
            dcap(
                &v,
                HardwareType::Tdx,
                "dcap/tdx_quote_outdated",
                "dcap/tdx_outdated_coll.json",
            ),
            at(TDX_OUTDATED_AT),
            ReasonCode::NoMatchingTcb,
        ),
        (
            "TDX: a TDX quote presented as SGX",
            dcap(
                &v,
                HardwareType::Sgx,
                "dcap/tdx_quote",
                "dcap/tdx_coll.json",
            ),
            at(TDX_AT),
            ReasonCode::Malformed,
        ),
        (
            "SGX: no collateral",
            Evidence::Sgx {
                quote: read(&v, "dcap/sgx_quote"),
                collateral: None,
            },
            at(SGX_AT),
            ReasonCode::MissingCollateral,
        ),
    ];
    // Bit flips inside the signed body of the DCAP quotes: the enclave's
    // report data (SGX, offset 48 + 320) and MRTD (TDX, offset 48 + 136).
    let mut sgx = dcap(
        &v,
        HardwareType::Sgx,
        "dcap/sgx_quote",
        "dcap/sgx_coll.json",
    );
    quote_mut(&mut sgx)[48 + 320] ^= 0x01;
    cases.push((
        "SGX: bit flip in report data",
        sgx,
        at(SGX_AT),
        ReasonCode::BadSignature,
    ));
    let mut tdx = dcap(
        &v,
        HardwareType::Tdx,
        "dcap/tdx_quote",
        "dcap/tdx_coll.json",
    );
    quote_mut(&mut tdx)[48 + 136] ^= 0x01;
    cases.push((
        "TDX: bit flip in MRTD",
        tdx,
        at(TDX_AT),
        ReasonCode::BadSignature,
    ));

    let mut wrong = Vec::new();
    for (name, ev, t, want) in &cases {
        match verify(ev, &anchors, *t) {
            Ok(_) => wrong.push(format!("{name}: accepted")),
            Err(r) if r.code != *want => {
                wrong.push(format!("{name}: {} ({}), want {want}", r.code, r.detail))
            }
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(cases.len() >= 10);
}

#[test]
fn policy_rejections_on_genuine_evidence() {
    let Some(v) = vectors() else { return };
    let anchors = TrustAnchors::default();
    let ev = snp(
        &v,
        "snp/virtee-report-milan.bin",
        &["snp/virtee-vcek-milan.der"],
    );
    let claims = verify(&ev, &anchors, at(SNP_AT)).unwrap();

    // A measurement not on the allow-list.
    let policy: Policy =
        serde_json::from_str(&format!(r#"{{"measurements":["{}"]}}"#, "ab".repeat(48))).unwrap();
    let verdict = appraise(
        &ev,
        &anchors,
        at(SNP_AT),
        Some(&policy),
        &Expected::default(),
    );
    assert_eq!(verdict.status, Status::Untrusted);
    assert_eq!(verdict.reasons[0].code, ReasonCode::MeasurementNotAllowed);
    // The same policy listing the real measurement passes.
    let policy: Policy = serde_json::from_str(&format!(
        r#"{{"measurements":["{}"]}}"#,
        hex::encode(&claims.measurement)
    ))
    .unwrap();
    let verdict = appraise(
        &ev,
        &anchors,
        at(SNP_AT),
        Some(&policy),
        &Expected::default(),
    );
    assert_eq!(verdict.status, Status::Trusted, "{verdict:?}");

    // A wrong nonce: the report data does not bind this session.
    let expected = tg_attest::report_data(&[1; 32], b"peer", &[2; 32]);
    let verdict = appraise(
        &ev,
        &anchors,
        at(SNP_AT),
        None,
        &Expected {
            report_data: Some(expected),
            agent_key: None,
        },
    );
    assert_eq!(verdict.reasons[0].code, ReasonCode::ReportDataMismatch);

    // A minimum TCB above the reported one.
    let snp_svn = claims.tcb.iter().find(|c| c.name == "snp").unwrap().svn;
    let policy: Policy =
        serde_json::from_str(&format!(r#"{{"min_tcb":{{"snp":{}}}}}"#, snp_svn + 1)).unwrap();
    let verdict = appraise(
        &ev,
        &anchors,
        at(SNP_AT),
        Some(&policy),
        &Expected::default(),
    );
    assert_eq!(verdict.reasons[0].code, ReasonCode::TcbBelowMinimum);

    // Intel status: the SGX sample needs configuration and hardening, so the
    // default policy (UpToDate only) refuses it; an explicit list admits it.
    let sgx = dcap(
        &v,
        HardwareType::Sgx,
        "dcap/sgx_quote",
        "dcap/sgx_coll.json",
    );
    let verdict = appraise(
        &sgx,
        &anchors,
        at(SGX_AT),
        Some(&Policy::default()),
        &Expected::default(),
    );
    assert!(
        verdict
            .reasons
            .iter()
            .any(|r| r.code == ReasonCode::TcbStatusNotAllowed),
        "{verdict:?}"
    );
    let lenient: Policy =
        serde_json::from_str(r#"{"intel_tcb_status":["UpToDate","ConfigurationAndSWHardeningNeeded"],"allow_debug":true}"#)
            .unwrap();
    let verdict = appraise(
        &sgx,
        &anchors,
        at(SGX_AT),
        Some(&lenient),
        &Expected::default(),
    );
    assert_eq!(verdict.status, Status::Trusted, "{verdict:?}");
}

#[test]
fn trust_anchors_are_parameters() {
    let Some(v) = vectors() else { return };
    let ev = snp(
        &v,
        "snp/virtee-report-milan.bin",
        &["snp/virtee-vcek-milan.der"],
    );
    // Only the Genoa root: the Milan VCEK no longer chains to anything trusted.
    let genoa = sev_genoa_ark();
    let anchors = TrustAnchors {
        snp: SnpAnchors::from_roots(&[genoa]).unwrap(),
        intel_root_der: None,
    };
    assert_eq!(
        verify(&ev, &anchors, at(SNP_AT)).unwrap_err().code,
        ReasonCode::UntrustedChain
    );
    // An Intel root that is not Intel's: nothing verifies.
    let anchors = TrustAnchors {
        snp: SnpAnchors::default(),
        intel_root_der: Some(
            tg_attest::snp_cert_bundle(&read(&v, "snp/milan-ask-ark-asvk.pem")).unwrap()[0].clone(),
        ),
    };
    let sgx = dcap(
        &v,
        HardwareType::Sgx,
        "dcap/sgx_quote",
        "dcap/sgx_coll.json",
    );
    assert!(verify(&sgx, &anchors, at(SGX_AT)).is_err());
}

fn sev_genoa_ark() -> Vec<u8> {
    // The second built-in root is Genoa's.
    SnpAnchors::default().arks[1].clone()
}
