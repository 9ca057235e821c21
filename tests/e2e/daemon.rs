//! The agent daemon: `up` runs it in the background with a pid file, a log
//! and a 0600 control socket; `status`, `logs` and `down` use them.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::common::*;

fn tg(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    tg_command()
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn up_status_logs_down() {
    // A coordinator waiting for 2 agents keeps our one agent joined and idle.
    let opts = JobOpts {
        clients: 2,
        min_clients: 2,
        rounds: 1,
        secure: None,
        ..JobOpts::default()
    };
    let mut fleet = Fleet::new(&opts);
    let addr = fleet.start_coordinator();
    let token = fleet.tokens(1).remove(0);
    let dir = fleet.root.path().join("daemon");

    let up = tg(
        &dir,
        &[
            "up",
            "--coordinator",
            &addr,
            "--enroll",
            &token,
            "--shard",
            "0/2",
            "--allow-plaintext",
        ],
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(String::from_utf8_lossy(&up.stdout).contains("agent started"));

    let socket = dir.join("run/agent.sock");
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(dir.join("run"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert!(dir.join("run/agent.pid").is_file());

    let joined = wait_for(Duration::from_secs(30), || {
        let s = tg(&dir, &["--json", "status"]);
        let v: serde_json::Value = serde_json::from_slice(&s.stdout).ok()?;
        (v["state"] == "joined").then_some(v)
    })
    .expect("the daemon joins the coordinator's job");
    assert!(joined["peer_id"].as_str().unwrap().starts_with("12D3KooW"));

    let again = tg(&dir, &["up", "--coordinator", &addr]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("E040"));

    let logs = tg(&dir, &["logs"]);
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("joined"),
        "{}",
        String::from_utf8_lossy(&logs.stdout)
    );

    let down = tg(&dir, &["down"]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    let gone = tg(&dir, &["status"]);
    assert_eq!(gone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("E072"));
    assert!(!dir.join("run/agent.pid").exists());
}
