//! Tamper evidence of the audit log: each kind of tampering is detected
//! with its own finding.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tg_trust::audit::{AuditLog, FindingKind, VerifyOptions, head_path, kind, verify_log};
use tg_trust::{IdentityKey, NodeSigner};

fn write_log(dir: &Path, n: u64) -> (PathBuf, Arc<IdentityKey>) {
    let key = Arc::new(IdentityKey::generate().unwrap());
    let path = dir.join("audit.jsonl");
    let log = AuditLog::open(&path, key.clone(), 1_000).unwrap();
    for i in 0..n {
        log.append(
            kind::ROUND_COMMITTED,
            Some("job-1"),
            serde_json::json!({"round": i, "epsilon_spent": 0.1 * i as f64, "participants": ["a", "b"]}),
            1_000 + i,
        )
        .unwrap();
    }
    (path, key)
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put(p: &Path, lines: &[String]) {
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

fn kinds(p: &Path) -> Vec<FindingKind> {
    let r = verify_log(p, &VerifyOptions::default()).unwrap();
    assert!(!r.ok, "tampering not detected");
    r.findings.iter().map(|f| f.kind).collect()
}

#[test]
fn untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = write_log(dir.path(), 5);
    let r = verify_log(&p, &VerifyOptions::default()).unwrap();
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!(r.entries, 6);
    assert_eq!(r.last_seq, Some(5));
    // An auditor's recorded head is found in a later, longer log.
    let head = (r.last_seq.unwrap(), r.last_hash.clone().unwrap());
    let log = AuditLog::open(&p, Arc::new(IdentityKey::generate().unwrap()), 0);
    assert!(log.is_ok());
    let opts = VerifyOptions {
        expect_head: Some(head),
        ..Default::default()
    };
    assert!(
        verify_log(&p, &opts)
            .unwrap()
            .findings
            .iter()
            .all(|f| f.kind != FindingKind::ExpectedHeadMissing)
    );
}

#[test]
fn modified_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = write_log(dir.path(), 5);
    let mut l = lines(&p);
    l[3] = l[3].replace("\"epsilon_spent\":0.2", "\"epsilon_spent\":0.02");
    put(&p, &l);
    assert!(kinds(&p).contains(&FindingKind::Modified));
}

#[test]
fn deleted_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = write_log(dir.path(), 5);
    let mut l = lines(&p);
    l.remove(2);
    put(&p, &l);
    let k = kinds(&p);
    assert!(
        k.contains(&FindingKind::Deleted) && k.contains(&FindingKind::ChainBroken),
        "{k:?}"
    );
}

#[test]
fn inserted_entry_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = write_log(dir.path(), 5);
    let mut l = lines(&p);
    let copy = l[2].clone();
    l.insert(3, copy);
    put(&p, &l);
    let k = kinds(&p);
    assert!(k.contains(&FindingKind::InsertedOrReordered), "{k:?}");
    // A forged entry by an outsider's key, with a correct chain, is also caught.
    let dir2 = tempfile::tempdir().unwrap();
    let (p2, _) = write_log(dir2.path(), 2);
    let outsider = Arc::new(IdentityKey::generate().unwrap());
    let mut forged = AuditLog::open(&p2, outsider.clone(), 0).unwrap();
    forged.set_signer(outsider);
    forged
        .append(
            kind::ADMISSION_ACCEPTED,
            Some("job-1"),
            serde_json::json!({"peer": "evil"}),
            5_000,
        )
        .unwrap();
    assert!(kinds(&p2).contains(&FindingKind::UnauthorizedSigner));
}

#[test]
fn reordered_entries_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = write_log(dir.path(), 5);
    let mut l = lines(&p);
    l.swap(2, 3);
    put(&p, &l);
    let k = kinds(&p);
    assert!(
        k.contains(&FindingKind::InsertedOrReordered) && k.contains(&FindingKind::ChainBroken),
        "{k:?}"
    );
}

#[test]
fn truncation_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = write_log(dir.path(), 5);
    let mut l = lines(&p);
    l.truncate(4);
    put(&p, &l);
    assert_eq!(kinds(&p), [FindingKind::Truncated]);
    // Without the head file, truncation cannot be ruled out: that fails too.
    std::fs::remove_file(head_path(&p)).unwrap();
    assert_eq!(kinds(&p), [FindingKind::HeadMissing]);
    // Cut mid-line.
    let dir = tempfile::tempdir().unwrap();
    let (p, _) = write_log(dir.path(), 3);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, &text[..text.len() - 20]).unwrap();
    assert!(kinds(&p).contains(&FindingKind::Malformed));
}

#[test]
fn rotation_hands_over_signing_and_old_key_is_refused_after() {
    let dir = tempfile::tempdir().unwrap();
    let (p, old) = write_log(dir.path(), 1);
    let new = Arc::new(IdentityKey::generate().unwrap());
    let mut log = AuditLog::open(&p, old.clone(), 0).unwrap();
    log.append(
        kind::KEY_ROTATED,
        None,
        serde_json::json!({"purpose": "identity", "old": hex::encode(old.public_key()), "new": hex::encode(new.public_key())}),
        2_000,
    )
    .unwrap();
    log.set_signer(new.clone());
    log.append(
        kind::ROUND_COMMITTED,
        Some("job-1"),
        serde_json::json!({"round": 9}),
        2_001,
    )
    .unwrap();
    let r = verify_log(&p, &VerifyOptions::default()).unwrap();
    assert!(r.ok, "{:?}", r.findings);
    assert_eq!(r.signers.len(), 2);
    // The retired key may no longer sign.
    log.set_signer(old);
    log.append(
        kind::ROUND_COMMITTED,
        Some("job-1"),
        serde_json::json!({"round": 10}),
        2_002,
    )
    .unwrap();
    assert!(kinds(&p).contains(&FindingKind::UnauthorizedSigner));
}

#[test]
fn rolled_back_log_misses_the_recorded_head() {
    let dir = tempfile::tempdir().unwrap();
    let (p, key) = write_log(dir.path(), 3);
    let before = std::fs::read(&p).unwrap();
    let head_before = std::fs::read(head_path(&p)).unwrap();
    let log = AuditLog::open(&p, key, 0).unwrap();
    log.append(
        kind::ROUND_COMMITTED,
        Some("job-1"),
        serde_json::json!({"round": 3}),
        2_000,
    )
    .unwrap();
    // The auditor records this head (the compliance report prints it)…
    let r = verify_log(&p, &VerifyOptions::default()).unwrap();
    assert!(r.ok);
    let recorded = (r.last_seq.unwrap(), r.last_hash.unwrap());
    // …then both files are rolled back to an earlier, self-consistent state.
    std::fs::write(&p, &before).unwrap();
    std::fs::write(head_path(&p), &head_before).unwrap();
    assert!(
        verify_log(&p, &VerifyOptions::default()).unwrap().ok,
        "rollback alone is invisible"
    );
    let opts = VerifyOptions {
        expect_head: Some(recorded),
        ..Default::default()
    };
    let r = verify_log(&p, &opts).unwrap();
    assert!(!r.ok);
    assert!(
        r.findings
            .iter()
            .any(|f| f.kind == FindingKind::ExpectedHeadMissing)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any finite float in a body survives the write/parse round trip, so an
    /// untouched log always verifies (serde_json's default float parser is
    /// not exact; the crate enables `float_roundtrip`).
    #[test]
    fn floats_in_bodies_round_trip(x in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL, y in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(IdentityKey::generate().unwrap());
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path, key, 1).unwrap();
        log.append(kind::ROUND_COMMITTED, Some("j"), serde_json::json!({"x": x, "acc": y, "eps": y * 3.7}), 2).unwrap();
        let r = verify_log(&path, &VerifyOptions::default()).unwrap();
        proptest::prop_assert!(r.ok, "{:?}", r.findings);
    }
}

#[test]
fn what_is_verified_is_the_text_that_is_read_once() {
    // `audit report` reads the log once and verifies that text: a copy
    // altered after the read (or a file swapped before a second read) is not
    // what the report shows as verified.
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), 3);
    let text = std::fs::read_to_string(&path).unwrap();
    let opts = VerifyOptions::default();
    assert!(
        tg_trust::audit::verify_text(&path, &text, &opts)
            .unwrap()
            .ok
    );
    let altered = text.replace("\"epsilon_spent\":0.1", "\"epsilon_spent\":0.0");
    assert_ne!(altered, text);
    assert!(
        !tg_trust::audit::verify_text(&path, &altered, &opts)
            .unwrap()
            .ok
    );
    assert_eq!(
        tg_trust::audit::parse_entries(&path, &text).unwrap().len(),
        3 + 1, // the log's opening entry
    );
}
