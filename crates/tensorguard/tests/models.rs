//! `tensorguard models list|show|rollback` on a real demo run: versions with
//! parents and metrics, an audited rollback, and refusals with codes.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should fail the test loudly

use crate::common::Sandbox;

#[test]
fn the_registry_lists_versions_and_an_audited_rollback_moves_the_head() {
    let sb = Sandbox::new();
    let d = sb.json(&[
        "demo",
        "--clients",
        "3",
        "--rounds",
        "3",
        "--no-baseline",
        "--json",
    ]);
    let run = d["run_id"].as_str().unwrap().to_owned();
    let run = &run[..10];

    let list = sb.json(&["models", "list", run, "--json"]);
    let versions = list["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{list}");
    let sha = |i: usize| versions[i]["sha256"].as_str().unwrap().to_owned();
    let (v1, v2, v3) = (sha(0), sha(1), sha(2));
    assert!(versions[0]["parent_sha256"].is_null());
    assert_eq!(versions[1]["parent_sha256"], v1.as_str());
    assert_eq!(versions[2]["parent_sha256"], v2.as_str());
    assert!(versions[2]["accuracy"].as_f64().unwrap() > 0.0);
    assert_eq!(list["head"]["sha256"], v3.as_str());
    assert_eq!(versions[2]["head"], true);

    let show = sb.json(&["models", "show", run, &v1[..8], "--json"]);
    assert_eq!(show["version"]["round"], 1);
    let human = sb.run(&["models", "list", run]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains(&v3[..12]) && text.contains("(initial)"),
        "{text}"
    );

    let done = sb.json(&[
        "models",
        "rollback",
        run,
        &v1[..12],
        "--reason",
        "round 3 regressed on the robots",
        "--json",
    ]);
    assert_eq!(done["rollback"]["sha256"], v1.as_str());
    assert_eq!(done["rollback"]["from_sha256"], v3.as_str());
    let list = sb.json(&["models", "list", run, "--json"]);
    assert_eq!(list["head"]["sha256"], v1.as_str());
    assert_eq!(list["versions"][0]["head"], true);
    assert_eq!(list["rollbacks"].as_array().unwrap().len(), 1);

    // Audited, in a log that still verifies.
    let log = std::fs::read_to_string(sb.data().join("audit").join("audit.jsonl")).unwrap();
    let entry = log
        .lines()
        .find(|l| l.contains("\"model.rolled_back\""))
        .expect("a model.rolled_back entry");
    assert!(
        entry.contains(&v1) && entry.contains("round 3 regressed"),
        "{entry}"
    );
    let verify = sb.run(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // The compliance report lists it.
    let reports = sb.path().join("reports");
    let out = sb.run(&[
        "audit",
        "report",
        "--job",
        run,
        "--out",
        reports.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "md"))
        .unwrap();
    let md = std::fs::read_to_string(md).unwrap();
    assert!(
        md.contains("Operators moved the job's model back")
            && md.contains("round 3 regressed on the robots"),
        "{md}"
    );

    // Refusals, with codes, and nothing changed.
    sb.fails_with(
        &["models", "rollback", run, &v1, "--reason", "again"],
        "E034",
    );
    sb.fails_with(
        &["models", "rollback", run, "abcdef0123", "--reason", "x"],
        "E033",
    );
    sb.fails_with(&["models", "show", run, "ab"], "E033");
    sb.fails_with(&["models", "rollback", run, &v2, "--reason", "  "], "E020");
    sb.fails_with(&["models", "list", "fedcba9876"], "E032");
    let list = sb.json(&["models", "list", run, "--json"]);
    assert_eq!(list["head"]["sha256"], v1.as_str());
    assert_eq!(list["rollbacks"].as_array().unwrap().len(), 1);
}

#[test]
fn a_rollback_without_a_passphrase_is_refused_and_changes_nothing() {
    let sb = Sandbox::new();
    let (run, v1) = two_round_demo(&sb, &[]);
    let out = sb
        .cmd()
        .env_remove("TENSORGUARD_KEY_PASSPHRASE")
        .args(["models", "rollback", &run, &v1, "--reason", "x"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("error[E043]"),
        "{err}"
    );
    let list = sb.json(&["models", "list", &run, "--json"]);
    assert_eq!(list["head"]["sha256"], list["versions"][1]["sha256"]);
    assert!(list["rollbacks"].as_array().unwrap().is_empty());
}

#[test]
fn a_rollback_is_refused_for_stateful_strategies_and_unprintable_reasons() {
    let sb = Sandbox::new();
    let (run, v1) = two_round_demo(&sb, &["--strategy", "fedadam"]);
    sb.fails_with(&["models", "rollback", &run, &v1, "--reason", "x"], "E034");
    sb.fails_with(
        &[
            "models",
            "rollback",
            &run,
            &v1,
            "--reason",
            "a\u{1b}[2Kforged",
        ],
        "E020",
    );
    let list = sb.json(&["models", "list", &run, "--json"]);
    assert!(list["rollbacks"].as_array().unwrap().is_empty());
}

/// A two-round demo run with `extra` flags: its id and round 1's version.
fn two_round_demo(sb: &Sandbox, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "demo",
        "--clients",
        "2",
        "--rounds",
        "2",
        "--no-baseline",
        "--json",
    ];
    args.extend_from_slice(extra);
    let d = sb.json(&args);
    let run = d["run_id"].as_str().unwrap().to_owned();
    let list = sb.json(&["models", "list", &run, "--json"]);
    let v1 = list["versions"][0]["sha256"].as_str().unwrap().to_owned();
    (run, v1)
}
