//! Chaos: kill -9 40% of the agents during the masked-input or unmask stage;
//! the round still commits with the survivors. 10 runs, 0 failures.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns panic on failed setup

mod common;

use std::time::Duration;

use common::*;

/// Runs one federation and kills 4 of 10 agents when round 1 reaches `stage`.
fn run(seed: usize, stage: &str) {
    let opts = JobOpts {
        rounds: 1,
        min_clients: 5,
        secure: Some(Secure { dropout: 0.45 }),
        stage_secs: 10.0,
        ..JobOpts::default()
    };
    let mut fleet = Fleet::new(&opts);
    let addr = fleet.start_coordinator();
    fleet.start_agents(10, &addr);
    let dir = fleet.coord_dir();
    let reached = wait_for(Duration::from_secs(120), || {
        stage_of(&dir, 1).filter(|s| s == stage || s == "committed" || s == "failed")
    });
    assert_eq!(
        reached.as_deref(),
        Some(stage),
        "round 1 went past {stage} before the kill"
    );
    // Four distinct agents, chosen by the run (3 is coprime to 10).
    for v in (0..4).map(|k| (k * 3 + seed) % 10) {
        fleet.kill_agent(v);
    }
    let (status, summary) = fleet.wait_coordinator(Duration::from_secs(120));
    assert!(status.success(), "{}", fleet.log("coordinator.err"));
    let rounds = fleet
        .store()
        .rounds(summary["job"].as_str().unwrap())
        .unwrap();
    let r = &rounds[0];
    assert_eq!(
        r.status,
        tg_types::record::RoundStatus::Committed,
        "run {seed} ({stage}): {:?}",
        r.reason
    );
    assert!(
        (6..=10).contains(&r.participants),
        "participants {}",
        r.participants
    );
    assert!(
        r.accuracy.unwrap() > 0.2,
        "a sum of 6+ real updates trains (chance is 0.1): {:?}",
        r.accuracy
    );
    eprintln!(
        "run {seed}: killed 4 at {stage}; {} contributed; accuracy {:.3}",
        r.participants,
        r.accuracy.unwrap_or(0.0)
    );
}

#[test]
fn killing_forty_percent_mid_round_still_commits() {
    for seed in 0..10 {
        // Half the runs kill during masked input, half during unmasking.
        let stage = if seed % 2 == 0 {
            "share_keys_collected"
        } else {
            "consistency_check_collected"
        };
        run(seed, stage);
    }
}
