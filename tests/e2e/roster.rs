//! The fleet roster end to end: a fleet root (not the coordinator's key)
//! certifies agents' identities; agents that pin it refuse rounds with an
//! uncertified participant, and a coordinator whose job names it admits only
//! certified agents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;

/// Creates a fleet root under `ops`: (sealed key file, public key hex).
fn fleet_root(ops: &Path) -> (PathBuf, String) {
    std::fs::create_dir_all(ops).unwrap();
    let file = ops.join("fleet-root.key");
    let v = ok(&tg(
        ops,
        &[],
        &[
            "keys",
            "fleet-root",
            "--out",
            file.to_str().unwrap(),
            "--json",
        ],
    ));
    (file, v["fleet_root"].as_str().unwrap().to_owned())
}

/// Gives agent `i` of `fleet` an identity and a certificate from `root`;
/// returns the certificate file.
fn certify(fleet: &Fleet, ops: &Path, root: &Path, i: usize) -> PathBuf {
    let dir = fleet.agent_dir(i);
    std::fs::create_dir_all(&dir).unwrap();
    ok(&tg(&dir, &[], &["keys", "generate"]));
    let key = ok(&tg(&dir, &[], &["keys", "export-public", "--json"]));
    let c = ok(&tg(
        ops,
        &[],
        &[
            "keys",
            "certify",
            "--root",
            root.to_str().unwrap(),
            "--identity",
            key["public_key"].as_str().unwrap(),
            "--name",
            &format!("robot-{i}"),
            "--json",
        ],
    ));
    let cert = dir.join("fleet.cert");
    std::fs::write(&cert, c["certificate"].as_str().unwrap()).unwrap();
    cert
}

/// A fleet of 3 agents whose owners pin a fleet root; agent 2 is certified
/// only when `certify_all`. Returns the round's record and the agents' logs.
fn fleet_with_root(certify_all: bool) -> (tg_types::record::RoundRecord, String) {
    let opts = JobOpts {
        clients: 3,
        min_clients: 3,
        rounds: 1,
        secure: Some(Secure { dropout: 0.1 }),
        ..JobOpts::default()
    };
    let mut fleet = Fleet::new(&opts);
    let ops = fleet.root.path().join("operator");
    let (root_file, root) = fleet_root(&ops);
    let policy = ops.join("policy.toml");
    std::fs::write(&policy, format!("fleet_root = \"{root}\"\n")).unwrap();
    let addr = fleet.start_coordinator();
    let tokens = fleet.tokens(3);
    for (i, t) in tokens.iter().enumerate() {
        let mut args = vec!["--policy".to_owned(), policy.display().to_string()];
        if certify_all || i < 2 {
            let cert = certify(&fleet, &ops, &root_file, i);
            args.extend(["--certificate".to_owned(), cert.display().to_string()]);
        } else {
            let dir = fleet.agent_dir(i);
            std::fs::create_dir_all(&dir).unwrap();
        }
        fleet.agent_args = args;
        fleet.start_agent(i, 3, &addr, Some(t));
    }
    let (_, summary) = fleet.wait_coordinator(Duration::from_secs(180));
    let job = summary["job"].as_str().unwrap().to_owned();
    let rounds = fleet.store().rounds(&job).unwrap();
    let logs = (0..3)
        .map(|i| fleet.log(&format!("agent-{i}.err")))
        .collect::<Vec<_>>()
        .join("\n");
    (rounds[0].clone(), logs)
}

#[test]
fn agents_pinning_a_fleet_root_refuse_an_uncertified_participant() {
    let (round, _) = fleet_with_root(true);
    assert_eq!(
        round.status,
        tg_types::record::RoundStatus::Committed,
        "{:?}",
        round.reason
    );
    // One agent without a certificate: the coordinator cannot vouch for it,
    // and every certified agent refuses the round before sending anything.
    let (round, logs) = fleet_with_root(false);
    assert_ne!(round.status, tg_types::record::RoundStatus::Committed);
    assert!(
        logs.contains("not certified") || logs.contains("fleet certificate"),
        "{logs}"
    );
}

#[test]
fn a_coordinator_with_a_fleet_root_admits_only_certified_agents() {
    let opts = JobOpts {
        clients: 3,
        min_clients: 3,
        rounds: 1,
        secure: Some(Secure { dropout: 0.1 }),
        ..JobOpts::default()
    };
    let mut fleet = Fleet::new(&opts);
    let ops = fleet.root.path().join("operator");
    let (root_file, root) = fleet_root(&ops);
    let job = std::fs::read_to_string(&fleet.job).unwrap().replace(
        "[admission]\nenrollment = true\n",
        &format!("[admission]\nenrollment = true\nfleet_root = \"{root}\"\n"),
    );
    std::fs::write(&fleet.job, job).unwrap();
    let addr = fleet.start_coordinator();
    let tokens = fleet.tokens(4);
    // A fourth agent first, without a certificate: refused at join.
    let stranger = fleet.agent_dir(3);
    std::fs::create_dir_all(&stranger).unwrap();
    let refused = tg(
        &stranger,
        &[],
        &[
            "agent",
            "start",
            "--once",
            "--coordinator",
            &addr,
            "--enroll",
            &tokens[2],
            "--shard",
            "2/3",
            // Usable without a root of its own, so that it gets as far as
            // the coordinator's admission check.
            "--allow-plaintext",
        ],
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("E070"), "{err}");
    assert!(err.contains("fleet"), "{err}");
    for (i, token) in tokens.iter().enumerate().take(3) {
        let cert = certify(&fleet, &ops, &root_file, i);
        fleet.agent_args = vec!["--certificate".to_owned(), cert.display().to_string()];
        fleet.start_agent(i, 4, &addr, Some(token));
    }
    let (_, summary) = fleet.wait_coordinator(Duration::from_secs(180));
    let job = summary["job"].as_str().unwrap().to_owned();
    let rounds = fleet.store().rounds(&job).unwrap();
    assert_eq!(
        rounds[0].status,
        tg_types::record::RoundStatus::Committed,
        "{:?}",
        rounds[0].reason
    );
}
