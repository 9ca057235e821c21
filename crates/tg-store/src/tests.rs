use super::*;
use tg_types::AgentId;
use tg_types::JobId;
use tg_types::record::{
    JobStatus, ParticipantOutcome, ParticipantRecord, RoundRecord, RoundStatus,
};

fn round(n: u32, status: RoundStatus) -> RoundRecord {
    RoundRecord {
        round: n,
        status,
        accuracy: Some(0.5),
        loss: Some(1.0),
        selected: 2,
        participants: 2,
        upload_bytes: 100,
        download_bytes: 200,
        duration_ms: 5,
        reason: None,
        model_sha256: None,
        parent_sha256: None,
        participants_detail: vec![ParticipantRecord {
            agent: AgentId::numbered(1),
            outcome: ParticipantOutcome::Contributed,
            num_examples: 10,
            train_loss: Some(0.3),
            upload_bytes: 50,
        }],
        epsilon: None,
        federated: None,
        gate: None,
        experts: Vec::new(),
        screened: Vec::new(),
        reputation: Vec::new(),
    }
}

#[test]
fn jobs_and_rounds_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let id = JobId::from_bytes([1; 16]);
    s.create_job(&NewJob {
        id,
        kind: "demo",
        spec: &serde_json::json!({"rounds": 2}),
    })
    .unwrap();
    s.record_round(
        id,
        &mut round(1, RoundStatus::Committed),
        Some(b"model-bytes"),
    )
    .unwrap();
    s.record_round(id, &mut round(2, RoundStatus::Failed), None)
        .unwrap();
    let job = s.find_job(&id.to_string()[..6]).unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!((job.rounds_committed, job.rounds_failed), (1, 1));
    let rounds = s.rounds(&job.id).unwrap();
    assert_eq!(rounds.len(), 2);
    let sha = rounds[0].model_sha256.clone().unwrap();
    assert_eq!(s.blobs().get(&sha).unwrap(), b"model-bytes");
    assert_eq!(rounds[0].participants_detail.len(), 1);
    assert_eq!(s.model_head(&job.id).unwrap().unwrap().sha256, sha);
    s.finish_job(
        id,
        JobStatus::Completed,
        None,
        &serde_json::json!({"ok": true}),
    )
    .unwrap();
    assert_eq!(s.list_jobs().unwrap()[0].status, JobStatus::Completed);
    s.integrity_check().unwrap();
}

#[test]
fn a_round_is_recorded_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let id = JobId::from_bytes([2; 16]);
    s.create_job(&NewJob {
        id,
        kind: "demo",
        spec: &serde_json::json!({}),
    })
    .unwrap();
    s.record_round(id, &mut round(1, RoundStatus::Committed), None)
        .unwrap();
    assert!(
        s.record_round(id, &mut round(1, RoundStatus::Committed), None)
            .is_err()
    );
    assert_eq!(s.rounds(&id.to_string()).unwrap().len(), 1);
}

#[test]
fn lookups_explain_misses() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    for b in [[0xaa; 16], [0xab; 16]] {
        s.create_job(&NewJob {
            id: JobId::from_bytes(b),
            kind: "demo",
            spec: &serde_json::json!({}),
        })
        .unwrap();
    }
    assert!(matches!(
        s.find_job("a"),
        Err(StoreError::Ambiguous { count: 2, .. })
    ));
    assert!(matches!(s.find_job("ff"), Err(StoreError::NotFound(_))));
    assert!(matches!(
        s.find_job("'; drop"),
        Err(StoreError::NotFound(_))
    ));
    assert!(s.find_job("aa").is_ok());
}

#[test]
fn tampered_blob_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let sha = s.blobs().put(b"abc").unwrap();
    std::fs::write(s.blobs().path_of(&sha).unwrap(), b"abd").unwrap();
    assert!(matches!(s.blobs().get(&sha), Err(StoreError::Corrupt(_))));
}

#[test]
fn unwritable_dir_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"").unwrap();
    assert!(matches!(
        Store::open(&file.join("sub")),
        Err(StoreError::Unwritable { .. })
    ));
}

#[test]
fn ledger_is_append_only_and_joins_rounds() {
    use tg_privacy::{AccountantKind, Delta, GaussianSteps, NoiseMultiplier, SamplingRate};
    use tg_types::privacy::LedgerEntry;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let id = JobId::from_bytes([7; 16]);
    s.create_job(&NewJob {
        id,
        kind: "demo",
        spec: &serde_json::json!({}),
    })
    .unwrap();
    let entry = |round, eps| LedgerEntry {
        round,
        mechanism: "central".into(),
        spent: GaussianSteps {
            sampling_rate: SamplingRate::new(0.1).unwrap(),
            noise_multiplier: NoiseMultiplier::new(1.1).unwrap(),
            steps: 1,
        },
        epsilon_after: eps,
        delta: Delta::new(1e-5).unwrap(),
        accountant: AccountantKind::Pld,
        release: None,
    };
    s.append_ledger(id, &entry(1, 0.5)).unwrap();
    s.append_ledger(id, &entry(2, 0.7)).unwrap();
    // A second entry for a round, an update and a delete are all refused.
    assert!(s.append_ledger(id, &entry(2, 0.1)).is_err());
    let conn = rusqlite::Connection::open(dir.path().join(crate::DB_FILE)).unwrap();
    let upd = conn.execute("UPDATE privacy_ledger SET epsilon_after = 0", []);
    assert!(upd.unwrap_err().to_string().contains("append-only"));
    assert!(conn.execute("DELETE FROM privacy_ledger", []).is_err());
    drop(conn);

    let ledger = s.ledger(&id.to_string()).unwrap();
    assert_eq!(ledger, vec![entry(1, 0.5), entry(2, 0.7)]);
    let mut r = round(1, RoundStatus::Committed);
    s.record_round(id, &mut r, None).unwrap();
    assert_eq!(s.rounds(&id.to_string()).unwrap()[0].epsilon, Some(0.5));
}
