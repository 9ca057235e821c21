//! `attest verify` says what a TRUSTED verdict does not: whether the code in
//! the TEE was checked (a pinned measurement), or not (no policy, or a
//! policy that admits any code).
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should fail the test loudly

use std::path::PathBuf;

use crate::common::Sandbox;

const MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";

#[test]
fn a_trusted_verdict_says_whether_the_code_was_pinned() {
    let snp =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/attestation-vectors/snp");
    if !snp.join("virtee-report-milan.bin").exists() {
        eprintln!(
            "SKIP: ../shared/attestation-vectors is absent; attest verify's code label is not tested"
        );
        return;
    }
    let sb = Sandbox::new();
    let verify = |policy: Option<&str>| {
        let mut args = vec![
            "--json".to_string(),
            "attest".into(),
            "verify".into(),
            "--kind".into(),
            "snp".into(),
            "--evidence".into(),
            snp.join("virtee-report-milan.bin").display().to_string(),
            "--cert".into(),
            snp.join("virtee-vcek-milan.der").display().to_string(),
            "--at".into(),
            "2025-06-01T00:00:00Z".into(),
        ];
        if let Some(text) = policy {
            let file = sb.path().join(format!("policy-{}.toml", text.len()));
            std::fs::write(&file, text).unwrap();
            args.push("--policy".into());
            args.push(file.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sb.json(&args)
    };
    let none = verify(None);
    assert_eq!(none["status"], "TRUSTED", "{none}");
    assert_eq!(none["code_pinned"], false);
    assert!(
        none["code_label"]
            .as_str()
            .unwrap()
            .starts_with("NO POLICY")
    );
    let any = verify(Some("measurements = \"any\"\n"));
    assert_eq!(any["status"], "TRUSTED", "{any}");
    assert!(
        any["code_label"].as_str().unwrap().starts_with("ANY CODE"),
        "{any}"
    );
    let pinned = verify(Some(&format!("measurements = [\"{MEASUREMENT}\"]\n")));
    assert_eq!(pinned["status"], "TRUSTED", "{pinned}");
    assert_eq!(pinned["code_pinned"], true);
    assert!(pinned["code_label"].is_null());
}
