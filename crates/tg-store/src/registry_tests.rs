//! The model registry: parents, the head, rollbacks and their guards.

use super::*;
use tg_types::JobId;
use tg_types::record::{RoundRecord, RoundStage, RoundStatus};

fn job(s: &mut Store, byte: u8) -> JobId {
    let id = JobId::from_bytes([byte; 16]);
    s.create_job(&NewJob {
        id,
        kind: "fleet",
        spec: &serde_json::json!({}),
    })
    .unwrap();
    id
}

fn record(n: u32, status: RoundStatus, parent: Option<&str>) -> RoundRecord {
    RoundRecord {
        round: n,
        status,
        accuracy: Some(0.1 * f64::from(n)),
        loss: Some(1.0),
        selected: 2,
        participants: 2,
        upload_bytes: 0,
        download_bytes: 0,
        duration_ms: 1,
        reason: None,
        model_sha256: None,
        parent_sha256: parent.map(str::to_owned),
        participants_detail: vec![],
        epsilon: None,
        federated: None,
        gate: None,
        experts: Vec::new(),
        screened: Vec::new(),
        reputation: Vec::new(),
    }
}

/// Commits round `n` with model bytes `model` from `parent`; its digest.
fn commit(s: &mut Store, id: JobId, n: u32, model: &[u8], parent: Option<&str>) -> String {
    let mut r = record(n, RoundStatus::Committed, parent);
    s.record_round(id, &mut r, Some(model)).unwrap();
    r.model_sha256.unwrap()
}

fn ok(_: &Rollback) -> std::result::Result<(), String> {
    Ok(())
}

#[test]
fn versions_carry_their_parent_metrics_and_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let id = job(&mut s, 1);
    let j = id.to_string();
    assert_eq!(s.model_head(&j).unwrap(), None);
    let v1 = commit(&mut s, id, 1, b"one", None);
    s.record_round(id, &mut record(2, RoundStatus::Failed, Some(&v1)), None)
        .unwrap();
    let v3 = commit(&mut s, id, 3, b"three", Some(&v1));
    let versions = s.model_versions(&j).unwrap();
    assert_eq!(versions.len(), 2, "a failed round is not a version");
    assert_eq!(versions[0].parent_sha256, None);
    assert_eq!(versions[1].parent_sha256.as_deref(), Some(v1.as_str()));
    assert_eq!(versions[1].round, 3);
    assert_eq!(versions[1].bytes, 5);
    assert_eq!(versions[1].accuracy, Some(0.30000000000000004));
    assert!(!versions[0].head && versions[1].head);
    assert_eq!(s.model_head(&j).unwrap().unwrap().sha256, v3);
    assert_eq!(s.find_version(&j, &v1[..8]).unwrap().round, 1);
    assert_eq!(s.find_version(&j, &v1.to_uppercase()).unwrap().round, 1);
}

#[test]
fn a_rollback_moves_the_head_until_a_later_round_commits() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let id = job(&mut s, 2);
    let j = id.to_string();
    let v1 = commit(&mut s, id, 1, b"one", None);
    let v2 = commit(&mut s, id, 2, b"two", Some(&v1));
    let rb = s
        .rollback_model(&j, &v1, "round 2 regressed on drawer-open", "ops", ok)
        .unwrap();
    assert_eq!(rb.from_sha256.as_deref(), Some(v2.as_str()));
    assert_eq!(rb.after_round, 2);
    let head = s.model_head(&j).unwrap().unwrap();
    assert_eq!(head.sha256, v1);
    assert_eq!(
        head.rollback.as_ref().unwrap().reason,
        "round 2 regressed on drawer-open"
    );
    let versions = s.model_versions(&j).unwrap();
    assert!(versions[0].head && !versions[1].head);
    // The next round trains from the rolled-back version and moves on.
    let v3 = commit(&mut s, id, 3, b"three", Some(&v1));
    assert_eq!(s.model_head(&j).unwrap().unwrap().sha256, v3);
    assert_eq!(s.rollbacks(&j).unwrap().len(), 1);
    // Rolling forward to a later version is a rollback too (any version).
    s.rollback_model(&j, &v2, "back to two", "ops", ok).unwrap();
    assert_eq!(s.model_head(&j).unwrap().unwrap().sha256, v2);
}

#[test]
fn a_round_in_flight_cannot_undo_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let id = job(&mut s, 3);
    let j = id.to_string();
    let v1 = commit(&mut s, id, 1, b"one", None);
    let v2 = commit(&mut s, id, 2, b"two", Some(&v1));
    // Round 3 has started (staged) from v2 when the operator rolls back.
    s.record_stage(id, 3, RoundStage::Selected, None).unwrap();
    let rb = s.rollback_model(&j, &v1, "bad", "ops", ok).unwrap();
    assert_eq!(rb.after_round, 3);
    // Round 3 commits anyway (a coordinator that missed the rollback):
    // it is a version, but the head stays where the operator put it.
    commit(&mut s, id, 3, b"three", Some(&v2));
    assert_eq!(s.model_head(&j).unwrap().unwrap().sha256, v1);
    let v4 = commit(&mut s, id, 4, b"four", Some(&v1));
    assert_eq!(s.model_head(&j).unwrap().unwrap().sha256, v4);
}

#[test]
fn rollbacks_are_refused_to_foreign_unknown_or_current_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let a = job(&mut s, 4);
    let b = job(&mut s, 5);
    let va = commit(&mut s, a, 1, b"a-one", None);
    let vb = commit(&mut s, b, 1, b"b-one", None);
    let (ja, jb) = (a.to_string(), b.to_string());
    // Another job's model is not a version of this one.
    assert!(matches!(
        s.rollback_model(&ja, &vb, "x", "ops", ok),
        Err(StoreError::NoVersion { .. })
    ));
    assert!(matches!(
        s.find_version(&ja, &vb[..10]),
        Err(StoreError::NoVersion { .. })
    ));
    // Too short, not hex, unknown.
    for bad in ["ab", "zzzzzzzz", "0000000000", ""] {
        assert!(
            matches!(s.find_version(&ja, bad), Err(StoreError::NoVersion { .. })),
            "{bad}"
        );
    }
    // Already the head.
    assert!(matches!(
        s.rollback_model(&ja, &va, "x", "ops", ok),
        Err(StoreError::Refused(_))
    ));
    assert!(s.rollbacks(&ja).unwrap().is_empty());
    assert_eq!(s.model_head(&jb).unwrap().unwrap().sha256, vb);
}

#[test]
fn a_rollback_that_cannot_be_audited_does_not_happen() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let id = job(&mut s, 6);
    let j = id.to_string();
    let v1 = commit(&mut s, id, 1, b"one", None);
    let v2 = commit(&mut s, id, 2, b"two", Some(&v1));
    let err = s
        .rollback_model(&j, &v1, "x", "ops", |_| Err("disk full".into()))
        .unwrap_err();
    assert!(matches!(err, StoreError::Unaudited(_)), "{err}");
    assert!(s.rollbacks(&j).unwrap().is_empty());
    assert_eq!(s.model_head(&j).unwrap().unwrap().sha256, v2);
}

#[test]
fn rollbacks_are_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let id = job(&mut s, 7);
    let j = id.to_string();
    let v1 = commit(&mut s, id, 1, b"one", None);
    commit(&mut s, id, 2, b"two", Some(&v1));
    s.rollback_model(&j, &v1, "x", "ops", ok).unwrap();
    for sql in [
        "UPDATE model_rollbacks SET sha256 = 'x'",
        "DELETE FROM model_rollbacks",
    ] {
        let e = s.conn.execute(sql, []).unwrap_err();
        assert!(e.to_string().contains("append-only"), "{sql}: {e}");
    }
}

#[test]
fn a_reason_is_one_line_of_plain_text_and_a_damaged_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let id = job(&mut s, 8);
    let j = id.to_string();
    let v1 = commit(&mut s, id, 1, b"one", None);
    commit(&mut s, id, 2, b"two", Some(&v1));
    for bad in [
        "",
        "   ",
        "ok\x1b[2Kforged",
        "two\rlines",
        "rtl\u{202e}txt",
        &"x".repeat(1001),
    ] {
        assert!(
            matches!(
                s.rollback_model(&j, &v1, bad, "ops", ok),
                Err(StoreError::Refused(_))
            ),
            "{bad:?}"
        );
    }
    // The target's bytes are checked before anything changes.
    let blob = s.blobs().path_of(&v1).unwrap();
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, b"tampered").unwrap();
    assert!(s.rollback_model(&j, &v1, "x", "ops", ok).is_err());
    assert!(s.rollbacks(&j).unwrap().is_empty());
    assert_eq!(s.last_rollback_seq(&j).unwrap(), None);
}
