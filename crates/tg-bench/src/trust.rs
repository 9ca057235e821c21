//! `bench trust`: what attestation, sealed keys and the audit log cost, on
//! the public attestation vectors.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde_json::{Value, json};
use tg_attest::{Evidence, TrustAnchors};
use tg_trust::audit::{AuditLog, VerifyOptions, kind, verify_log};
use tg_trust::sealed::KdfParams;
use tg_trust::{IdentityKey, Passphrase};

use crate::{BenchError, Result, median_ms};

fn read(dir: &Path, f: &str) -> Result<Vec<u8>> {
    std::fs::read(dir.join(f))
        .map_err(|e| BenchError::Args(format!("cannot read {}: {e}", dir.join(f).display())))
}

fn trust(e: tg_trust::TrustError) -> BenchError {
    BenchError::Wrong(e.to_string())
}

fn at(secs: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Runs the measurements; `repeat` times each (median reported).
pub fn run(vectors: &Path, repeat: usize) -> Result<Value> {
    let anchors = TrustAnchors::default();
    let snp = Evidence::SevSnp {
        report: read(vectors, "snp/virtee-report-milan.bin")?,
        certs: vec![read(vectors, "snp/virtee-vcek-milan.der")?],
    };
    let sgx = Evidence::Sgx {
        quote: read(vectors, "dcap/sgx_quote")?,
        collateral: Some(read(vectors, "dcap/sgx_coll.json")?),
    };
    let tdx = Evidence::Tdx {
        quote: read(vectors, "dcap/tdx_quote")?,
        collateral: Some(read(vectors, "dcap/tdx_coll.json")?),
    };
    // The vectors' verification times (README of the vectors; SNP: inside every certificate's window).
    let cases = [
        ("snp", &snp, 1_748_736_000u64),
        ("sgx", &sgx, 1_751_624_924),
        ("tdx", &tdx, 1_751_624_655),
    ];
    let mut verify_ms = serde_json::Map::new();
    for (name, ev, t) in cases {
        let (ms, result) = median_ms(repeat, || tg_attest::verify(ev, &anchors, at(t)));
        if let Err(r) = result {
            return Err(BenchError::Wrong(format!(
                "the {name} vector did not verify: {r} (check --vectors)"
            )));
        }
        verify_ms.insert(name.into(), json!(ms));
    }
    let pass = Passphrase::new("bench passphrase".into()).map_err(trust)?;
    // Removed when dropped, also when a step below fails.
    let tmp = tempfile::Builder::new()
        .prefix("tensorguard-bench-trust-")
        .tempdir()?;
    let dir = tmp.path();
    let key_path = dir.join("k.key");
    let key = IdentityKey::generate().map_err(trust)?;
    key.save_with(&key_path, &pass, true, KdfParams::default())
        .map_err(trust)?;
    let (unseal_ms, _) = median_ms(repeat.min(7), || {
        IdentityKey::load(&key_path, &pass).is_ok()
    });

    let log_path = dir.join("audit.jsonl");
    let log = AuditLog::open(&log_path, Arc::new(key), 0).map_err(trust)?;
    let n = 2_000u64;
    let t = Instant::now();
    for i in 0..n {
        log.append(
            kind::ROUND_COMMITTED,
            Some("bench"),
            json!({"round": i, "epsilon": 0.01 * i as f64, "participants": 50}),
            i,
        )
        .map_err(trust)?;
    }
    let append_per_s = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let report = verify_log(&log_path, &VerifyOptions::default()).map_err(trust)?;
    let verify_per_s = report.entries as f64 / t.elapsed().as_secs_f64();
    Ok(json!({
        "attest_verify_ms": verify_ms,
        "argon2id_unseal_ms": unseal_ms,
        "argon2id_params": {"m_mib": 64, "t": 3, "p": 1},
        "audit_append_per_s_fsync": append_per_s,
        "audit_verify_entries_per_s": verify_per_s,
        "audit_log_ok": report.ok,
        "repeat": repeat,
    }))
}
