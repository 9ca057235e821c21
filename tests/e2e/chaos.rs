//! Chaos: kill -9 40% of the agents during the masked-input or unmask stage;
//! the round still commits with the survivors. 10 runs, 0 failures.

use std::time::Duration;

use crate::common::*;

/// Runs one federation and kills 4 of 10 agents as soon as round 1 has
/// recorded `stage`. Returns false if the round committed before the kill
/// landed (the stages are milliseconds long; the caller then tries again).
fn run(seed: usize, stage: &str) -> bool {
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
        let stages = stages_of(&dir, 1);
        stages
            .iter()
            .any(|s| s == stage || s == "failed")
            .then_some(stages)
    });
    assert!(
        reached.is_some(),
        "round 1 never reached {stage}: {}",
        fleet.log("coordinator.err")
    );
    // Four distinct agents, chosen by the run (3 is coprime to 10).
    for v in (0..4).map(|k| (k * 3 + seed) % 10) {
        fleet.kill_agent(v);
    }
    let at_kill = stages_of(&dir, 1);
    if at_kill.iter().any(|s| s == "committed") {
        eprintln!("run {seed}: the round committed before the kill landed; again");
        return false;
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
        "run {seed}: killed 4 after {:?}; {} contributed; accuracy {:.3}",
        at_kill.last(),
        r.participants,
        r.accuracy.unwrap_or(0.0)
    );
    true
}

#[test]
fn killing_forty_percent_mid_round_still_commits() {
    for seed in 0..10 {
        // Half the runs kill once shares are exchanged (before masked
        // input), half once masked inputs are in (before unmasking).
        let stage = if seed % 2 == 0 {
            "share_keys_collected"
        } else {
            "masked_input_collected"
        };
        assert!(
            (0..5).any(|_| run(seed, stage)),
            "run {seed}: no kill landed mid-round in 5 tries"
        );
    }
}
