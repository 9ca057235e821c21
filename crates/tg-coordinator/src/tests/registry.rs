//! The model registry seen from a running job: an operator's rollback
//! (another process, another store connection) during and between rounds.

use super::*;

#[tokio::test]
async fn a_rollback_during_a_round_discards_its_candidate_and_the_next_round_starts_from_it() {
    // While round 3 trains, the operator rolls the job back to round 1's
    // version.
    let (outcome, store, _d) = with_operator_in_round_3(
        |s, job| {
            let v1 = s.model_versions(job).unwrap()[0].clone();
            assert_eq!(v1.round, 1);
            s.rollback_model(job, &v1.sha256, "round 2 regressed", "test", |_| Ok(()))
                .unwrap();
        },
        4,
    )
    .await;
    let job = JobId::from_bytes([9; 16]).to_string();
    let rounds = store.rounds(&job).unwrap();
    let statuses: Vec<RoundStatus> = rounds.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            RoundStatus::Committed,
            RoundStatus::Committed,
            RoundStatus::Failed,
            RoundStatus::Committed
        ]
    );
    assert!(
        rounds[2]
            .reason
            .as_deref()
            .unwrap()
            .contains("rolled the job back"),
        "{:?}",
        rounds[2].reason
    );
    let v1 = rounds[0].model_sha256.clone().unwrap();
    let v2 = rounds[1].model_sha256.clone().unwrap();
    // Parents: the initial model (not stored), v1, then v2 for the discarded
    // round, and v1 again for the round after the rollback.
    assert_eq!(rounds[0].parent_sha256, None);
    assert_eq!(rounds[1].parent_sha256.as_deref(), Some(v1.as_str()));
    assert_eq!(rounds[2].parent_sha256.as_deref(), Some(v2.as_str()));
    assert_eq!(rounds[3].parent_sha256.as_deref(), Some(v1.as_str()));
    // 1 (round 1) + 1 (round 4), not 3 or 4.
    assert_eq!(outcome.model, params(2.0));
    let head = store.model_head(&job).unwrap().unwrap();
    assert_eq!(Some(head.sha256), rounds[3].model_sha256.clone());
    assert!(head.rollback.is_none());
    let versions = store.model_versions(&job).unwrap();
    assert_eq!(versions.len(), 3);
    assert!(versions[2].head);
}

/// Runs a 4-round job in which `operator` acts (on its own connection)
/// while round 3 trains; each round adds 1.
async fn with_operator_in_round_3(
    operator: impl Fn(&mut Store, &str) + Send + 'static,
    rounds: u32,
) -> (crate::RunOutcome, Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let operator_dir = dir.path().to_owned();
    let job = JobId::from_bytes([9; 16]).to_string();
    let transport = ScriptedTransport {
        agents: (0..2).map(AgentId::numbered).collect(),
        queue: VecDeque::new(),
        script: Box::new(move |a, req| {
            if req.at.round == 3 && a.as_str().ends_with('0') {
                operator(&mut Store::open(&operator_dir).unwrap(), &job);
            }
            vec![reply(a, req, params(1.0))]
        }),
        evaluate: None,
    };
    run_in(dir, config(rounds, 2), transport).await
}

fn version(store: &Store, job: &str, i: usize) -> String {
    store.model_versions(job).unwrap()[i].sha256.clone()
}

#[tokio::test]
async fn a_rollback_undone_during_a_round_still_discards_its_candidate() {
    // Round 3 trains from v2; the operator rolls back to v1 and then to v2
    // again. The head is v2 (made after round 3 was staged, so round 3
    // could never move it): round 3's candidate must not be committed.
    let (outcome, store, _d) = with_operator_in_round_3(
        |s, job| {
            let (v1, v2) = (version(s, job, 0), version(s, job, 1));
            s.rollback_model(job, &v1, "oops", "test", |_| Ok(()))
                .unwrap();
            s.rollback_model(job, &v2, "undo", "test", |_| Ok(()))
                .unwrap();
        },
        4,
    )
    .await;
    let job = JobId::from_bytes([9; 16]).to_string();
    let rounds = store.rounds(&job).unwrap();
    assert_eq!(rounds[2].status, RoundStatus::Failed, "{:?}", rounds[2]);
    assert_eq!(rounds[3].parent_sha256, rounds[1].model_sha256);
    assert_eq!(outcome.model, params(3.0));
    assert_eq!(
        store.model_head(&job).unwrap().unwrap().sha256,
        rounds[3].model_sha256.clone().unwrap()
    );
}

#[tokio::test]
async fn a_rollback_during_the_last_round_is_where_the_job_ends() {
    let (outcome, store, _d) = with_operator_in_round_3(
        |s, job| {
            let v1 = version(s, job, 0);
            s.rollback_model(job, &v1, "last round regressed", "test", |_| Ok(()))
                .unwrap();
        },
        3,
    )
    .await;
    let job = JobId::from_bytes([9; 16]).to_string();
    let v1 = version(&store, &job, 0);
    assert_eq!(outcome.model, params(1.0));
    assert_eq!(outcome.model_sha256.as_deref(), Some(v1.as_str()));
    assert_eq!(outcome.final_evaluation.unwrap().loss, 1.0);
}
