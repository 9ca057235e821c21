//! Coordinator kill -9 at a random stage, restart → the job completes; the
//! ledger and the model versions stay consistent. 10 runs, 0 inconsistencies.

use std::time::Duration;

use crate::common::*;
use tg_types::record::RoundStatus;

const STAGES: [&str; 6] = [
    "selected",
    "model_sent",
    "advertise_keys_collected",
    "masked_input_collected",
    "unmasked",
    "committed",
];

fn run(seed: usize) {
    let opts = JobOpts {
        rounds: 3,
        min_clients: 5,
        port: free_port(),
        dp: Some((1.1, 50.0)),
        local_epochs: 1,
        ..JobOpts::default()
    };
    let mut fleet = Fleet::new(&opts);
    let addr = fleet.start_coordinator();
    fleet.start_agents(10, &addr);
    let dir = fleet.coord_dir();
    let stage = STAGES[seed % STAGES.len()];
    let reached = wait_for(Duration::from_secs(120), || {
        stages_of(&dir, 2).contains(&stage.to_owned()).then_some(())
    });
    assert!(
        reached.is_some(),
        "round 2 never reached {stage}: {}",
        fleet.log("coordinator.err")
    );
    fleet.kill_coordinator();
    // Where the kill really landed (polling may be a stage late).
    // The round row is written (committed) just before its `committed`
    // stage, so a kill between the two leaves round 2 committed without the
    // stage: ask the rounds table too.
    let before = stages_of(&dir, 2);
    let committed_before = before.iter().any(|s| s == "committed") || {
        let store = fleet.store();
        let jobs = store.list_jobs().unwrap();
        jobs.iter().any(|j| {
            store
                .rounds(&j.id)
                .unwrap()
                .iter()
                .any(|r| r.round == 2 && r.status == RoundStatus::Committed)
        })
    };
    // While it is down, an operator rolls the job back to round 1's model
    // (a second process on the same store): the restarted coordinator must
    // train the fleet from it.
    let v1 = {
        let mut store = fleet.store();
        let job = store.list_jobs().unwrap()[0].id.clone();
        let v1 = store.model_versions(&job).unwrap()[0].sha256.clone();
        // When round 2 did not commit, round 1's model already is the head.
        if store.model_head(&job).unwrap().unwrap().sha256 != v1 {
            store
                .rollback_model(&job, &v1, "e2e: back to round 1", "test", |_| Ok(()))
                .unwrap();
        }
        v1
    };
    let again = fleet.start_coordinator();
    assert_eq!(again, addr, "same identity and port after restart");
    let (status, summary) = fleet.wait_coordinator(Duration::from_secs(180));
    assert!(
        status.success(),
        "run {seed}: {}",
        fleet.log("coordinator.err")
    );
    fleet.agents_exit_cleanly(10);

    let job = summary["job"].as_str().unwrap().to_owned();
    let store = fleet.store();
    let rounds = store.rounds(&job).unwrap();
    let numbers: Vec<u32> = rounds.iter().map(|r| r.round).collect();
    assert_eq!(numbers, [1, 2, 3], "every round recorded once: {numbers:?}");
    // The round in flight at the kill (if the kill did not fall between
    // rounds) is recorded failed as interrupted; every other round commits.
    let failed: Vec<_> = rounds
        .iter()
        .filter(|r| r.status != RoundStatus::Committed)
        .collect();
    assert!(
        failed.len() <= 1,
        "only the interrupted round may fail: {rounds:?}"
    );
    for r in &failed {
        assert!(
            r.reason.as_deref().unwrap_or("").contains("interrupted"),
            "{:?}",
            r.reason
        );
        assert!(r.round >= 2, "round 1 finished before the kill");
    }
    if !committed_before {
        assert_eq!(
            failed.first().map(|r| r.round),
            Some(2),
            "round 2 was in flight"
        );
    }
    // The restarted job trained from the version the operator rolled back
    // to: round 3 started from it, or (when round 3 was the round cut by
    // the kill) the job ended on it.
    if rounds[2].status == RoundStatus::Committed {
        assert_eq!(
            rounds[2].parent_sha256.as_deref(),
            Some(v1.as_str()),
            "{rounds:?}"
        );
    } else {
        assert_eq!(store.model_head(&job).unwrap().unwrap().sha256, v1);
        assert_eq!(summary["final_model_sha256"], v1.as_str(), "{summary}");
    }
    // Model versions: every committed round's model is stored and distinct.
    let mut shas = std::collections::BTreeSet::new();
    for r in rounds.iter().filter(|r| r.status == RoundStatus::Committed) {
        let sha = r
            .model_sha256
            .clone()
            .expect("committed rounds store a model");
        assert!(store.blobs().get(&sha).is_ok());
        assert!(shas.insert(sha), "a model version recorded twice");
    }
    // The ledger: one entry per round that started, none twice, ε increasing,
    // and the job's ε is the ledger's last.
    let ledger = store.ledger(&job).unwrap();
    let charged: Vec<u32> = ledger.iter().map(|e| e.round).collect();
    assert_eq!(charged, [1, 2, 3], "each round charged exactly once");
    assert!(
        ledger
            .windows(2)
            .all(|w| w[1].epsilon_after > w[0].epsilon_after)
    );
    let eps = summary["epsilon"].as_f64().unwrap();
    assert!(
        eps >= ledger[2].epsilon_after - 1e-12,
        "reported ε {eps} below the ledger's"
    );
    eprintln!(
        "run {seed}: killed at round 2 after {:?}; rounds {:?}; ε {eps:.3}",
        before.last(),
        rounds.iter().map(|r| r.status.as_str()).collect::<Vec<_>>()
    );
}

#[test]
fn coordinator_restarts_resume_the_job_consistently() {
    for seed in 0..10 {
        run(seed);
    }
}
