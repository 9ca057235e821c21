//! Partition: one agent cut off for 20 s (frozen with SIGSTOP, its
//! connection silent) is treated as a dropout and takes part again in later
//! rounds.

use std::time::{Duration, Instant};

use crate::common::*;
use tg_types::record::{ParticipantOutcome, RoundStatus};

#[test]
fn an_agent_cut_off_for_twenty_seconds_drops_out_and_comes_back() {
    let opts = JobOpts {
        clients: 5,
        rounds: 9,
        min_clients: 3,
        secure: Some(Secure { dropout: 0.3 }),
        train_secs: 4.0,
        stage_secs: 3.0,
        local_epochs: 1,
        ..JobOpts::default()
    };
    let mut fleet = Fleet::new(&opts);
    let addr = fleet.start_coordinator();
    fleet.start_agents(5, &addr);
    let dir = fleet.coord_dir();
    assert!(
        wait_for(Duration::from_secs(60), || stage_of(&dir, 1)
            .filter(|s| s == "committed"))
        .is_some()
    );
    let peer = fleet
        .log("agent-0.err")
        .lines()
        .find_map(|l| {
            l.strip_prefix("agent ")
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned)
        })
        .expect("agent 0 printed its peer id");

    fleet.signal_agent(0, "STOP");
    let cut = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    fleet.signal_agent(0, "CONT");
    eprintln!("agent 0 was cut off for {:?}", cut.elapsed());

    let (status, summary) = fleet.wait_coordinator(Duration::from_secs(240));
    assert!(status.success(), "{}", fleet.log("coordinator.err"));
    let rounds = fleet
        .store()
        .rounds(summary["job"].as_str().unwrap())
        .unwrap();
    let outcome = |r: &tg_types::record::RoundRecord| {
        r.participants_detail
            .iter()
            .find(|p| p.agent.as_str() == peer)
            .map(|p| p.outcome)
    };
    let timeline: Vec<_> = rounds
        .iter()
        .map(|r| (r.round, r.status.as_str(), outcome(r)))
        .collect();
    eprintln!("{timeline:?}");
    assert!(
        rounds.iter().all(|r| r.status == RoundStatus::Committed),
        "{timeline:?}"
    );
    let dropped = rounds
        .iter()
        .position(|r| outcome(r) == Some(ParticipantOutcome::Dropped))
        .expect("the cut-off agent dropped out of a round");
    assert!(
        rounds[dropped..]
            .iter()
            .any(|r| outcome(r) == Some(ParticipantOutcome::Contributed)),
        "the agent contributed again after the partition: {timeline:?}"
    );
}
