//! Reading the public attestation vectors in ../shared/attestation-vectors.
#![allow(clippy::unwrap_used, dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tg_attest::{Evidence, HardwareType};

pub fn vectors() -> Option<PathBuf> {
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

pub fn read(dir: &Path, f: &str) -> Vec<u8> {
    std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))
}

/// Seconds since the epoch for a UTC date-time "YYYY-MM-DDTHH:MM:SSZ".
pub fn at(s: &str) -> SystemTime {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    UNIX_EPOCH + Duration::from_secs(secs as u64)
}

/// A time inside every SNP certificate's validity window (the VLEK is
/// valid 2024-12-10 .. 2025-12-10, the VCEKs 2023 .. 2030).
pub const SNP_AT: &str = "2025-06-01T00:00:00Z";
pub const SGX_AT: &str = "2025-07-04T10:28:44Z";
pub const TDX_AT: &str = "2025-07-04T10:24:15Z";
pub const TDX_OUTDATED_AT: &str = "2026-03-05T10:50:33Z";

pub fn snp(dir: &Path, report: &str, certs: &[&str]) -> Evidence {
    let mut ders = Vec::new();
    for c in certs {
        ders.extend(tg_attest::snp_cert_bundle(&read(dir, c)).unwrap());
    }
    Evidence::SevSnp {
        report: read(dir, report),
        certs: ders,
    }
}

pub fn dcap(dir: &Path, kind: HardwareType, quote: &str, coll: &str) -> Evidence {
    let (quote, collateral) = (read(dir, quote), Some(read(dir, coll)));
    match kind {
        HardwareType::Sgx => Evidence::Sgx { quote, collateral },
        _ => Evidence::Tdx { quote, collateral },
    }
}

pub fn snp_report_mut(ev: &mut Evidence) -> &mut Vec<u8> {
    match ev {
        Evidence::SevSnp { report, .. } => report,
        _ => unreachable!(),
    }
}

pub fn quote_mut(ev: &mut Evidence) -> &mut Vec<u8> {
    match ev {
        Evidence::Sgx { quote, .. } | Evidence::Tdx { quote, .. } => quote,
        _ => unreachable!(),
    }
}
