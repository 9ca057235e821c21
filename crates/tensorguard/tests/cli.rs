//! End-to-end tests of the `tensorguard` binary: real processes, real data.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should fail the test loudly

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::Sandbox;
use serde_json::Value;

#[test]
fn short_demo_reports_json_and_is_readable_afterwards() {
    let sb = Sandbox::new();
    let d = sb.json(&["demo", "--clients", "4", "--rounds", "3", "--json"]);
    for key in [
        "run_id",
        "strategy",
        "clients",
        "rounds",
        "final_accuracy",
        "centralized_accuracy",
        "history",
        "elapsed_s",
    ] {
        assert!(d.get(key).is_some(), "missing {key} in {d}");
    }
    assert_eq!(d["clients"], 4);
    let history = d["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    for h in history {
        for key in [
            "round",
            "accuracy",
            "loss",
            "participants",
            "upload_bytes",
            "duration_ms",
            "status",
        ] {
            assert!(h.get(key).is_some(), "missing history.{key}");
        }
        assert_eq!(h["status"], "committed");
        assert!(h["upload_bytes"].as_u64().unwrap() > 0);
    }
    assert!(d["final_accuracy"].as_f64().unwrap() > 0.5, "{d}");

    let id = d["run_id"].as_str().unwrap();
    let list = sb.json(&["runs", "list", "--json"]);
    assert_eq!(list["runs"][0]["run_id"], id);
    assert_eq!(list["runs"][0]["status"], "completed");
    let show = sb.json(&["runs", "show", &id[..8], "--json"]);
    assert_eq!(show["rounds"].as_array().unwrap().len(), 3);

    let human = sb.run(&["runs", "show", id]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("committed") && !text.contains('\u{1b}'),
        "{text}"
    );
}

/// The README's first impression: defaults reach ≥ 93 % held-out accuracy
/// and stay within 3 points of the centralized yardstick.
#[test]
fn default_demo_converges_close_to_centralized() {
    let sb = Sandbox::new();
    let d = sb.json(&["demo", "--json"]);
    let (fed, central) = (
        d["final_accuracy"].as_f64().unwrap(),
        d["centralized_accuracy"].as_f64().unwrap(),
    );
    assert!(fed >= 0.93, "final accuracy {fed}");
    assert!(
        central - fed <= 0.03,
        "federated {fed} vs centralized {central}"
    );
    assert_eq!(d["clients"], 10);
    assert_eq!(d["partition"], "dirichlet:0.5");
}

#[test]
fn every_strategy_converges_on_skewed_data() {
    let sb = Sandbox::new();
    for strategy in ["fedavg", "fedprox", "scaffold", "fedadam"] {
        let d = sb.json(&[
            "demo",
            "--strategy",
            strategy,
            "--partition",
            "dirichlet:0.3",
            "--no-baseline",
            "--json",
        ]);
        let acc = d["final_accuracy"].as_f64().unwrap();
        assert!(acc >= 0.93, "{strategy}: {acc}");
        assert!(
            d["rounds_to_90"].as_u64().is_some(),
            "{strategy} never reached 90 %"
        );
    }
}

#[test]
fn dropout_of_thirty_percent_still_converges() {
    let sb = Sandbox::new();
    let d = sb.json(&["demo", "--dropout", "0.3", "--no-baseline", "--json"]);
    assert!(d["final_accuracy"].as_f64().unwrap() >= 0.93, "{d}");
    let partial = d["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["participants"].as_u64() < Some(10));
    assert!(partial, "fault injection dropped nobody");
}

#[test]
fn human_output_has_one_line_per_round_and_no_colour_off_a_tty() {
    let sb = Sandbox::new();
    let out = sb.run(&["demo", "--clients", "3", "--rounds", "2", "--no-baseline"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("round ")).count(),
        2,
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "ANSI codes off a TTY: {text}");
}

#[test]
fn a_round_below_quorum_is_recorded_as_failed() {
    let sb = Sandbox::new();
    let d = sb.json(&[
        "demo",
        "--clients",
        "4",
        "--rounds",
        "6",
        "--dropout",
        "0.7",
        "--min-clients",
        "4",
        "--no-baseline",
        "--json",
    ]);
    let history = d["history"].as_array().unwrap();
    assert_eq!(history.len(), 6, "every round is reported");
    let failed: Vec<_> = history.iter().filter(|h| h["status"] == "failed").collect();
    assert!(
        !failed.is_empty(),
        "with 70% dropout and a quorum of all 4, some round must fail"
    );
    for f in failed {
        assert!(f["reason"].as_str().unwrap().contains("quorum"), "{f}");
    }
}

#[test]
fn bad_input_gets_coded_errors() {
    let sb = Sandbox::new();
    sb.fails_with(&["demo", "--dataset", "csv:/nonexistent/data.csv"], "E010");
    sb.fails_with(&["demo", "--dataset", "mnist-idx:/nonexistent/dir"], "E010");

    let csv = sb.path().join("bad.csv");
    std::fs::write(&csv, "label,a,b\n0,1,2\n1,2,oops\n").unwrap();
    let err = sb.fails_with(
        &["demo", "--dataset", &format!("csv:{}", csv.display())],
        "E011",
    );
    assert!(err.contains(":3:") && err.contains("oops"), "{err}");

    sb.fails_with(&["demo", "--clients", "0"], "E020");
    sb.fails_with(&["demo", "--clients", "3", "--min-clients", "5"], "E021");
    sb.fails_with(&["demo", "--partition", "dirichlet:-2"], "E020");
    sb.fails_with(&["demo", "--strategy", "fedsgd"], "E020");
    sb.fails_with(&["demo", "--clients", "many"], "E002");
    sb.fails_with(
        &[
            "demo",
            "--model",
            "cnn",
            "--dataset",
            &format!("csv:{}", write_good_csv(sb.path()).display()),
        ],
        "E012",
    );

    let cfg = sb.path().join("typo.toml");
    std::fs::write(&cfg, "[demo]\nrounds = 3\nclinets = 5\n").unwrap();
    let err = sb.fails_with(&["--config", cfg.to_str().unwrap(), "demo"], "E003");
    assert!(err.contains(":3:") && err.contains("clinets"), "{err}");
    let err = sb.fails_with(&["config", "validate", cfg.to_str().unwrap()], "E003");
    assert!(err.contains("typo.toml:3"), "{err}");
    sb.fails_with(&["--config", "/nonexistent/config.toml", "demo"], "E001");

    let file = sb.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let out = sb
        .cmd_with_data_dir(&file.join("sub"))
        .args(["demo", "--rounds", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("error[E030]"),
        "{err}"
    );

    sb.fails_with(&["runs", "show", "deadbeef"], "E032");
}

fn write_good_csv(dir: &Path) -> PathBuf {
    let p = dir.join("good.csv");
    let mut s = String::from("label,x,y\n");
    for i in 0..40 {
        s.push_str(&format!(
            "{},{},{}\n",
            i % 2,
            i as f32 * 0.1,
            (i % 2) as f32 + 0.05 * i as f32
        ));
    }
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn csv_dataset_trains() {
    let sb = Sandbox::new();
    let p = write_good_csv(sb.path());
    let d = sb.json(&[
        "demo",
        "--dataset",
        &format!("csv:{}", p.display()),
        "--clients",
        "2",
        "--rounds",
        "5",
        "--partition",
        "iid",
        "--json",
    ]);
    assert!(d["final_accuracy"].as_f64().unwrap() >= 0.5, "{d}");
}

#[test]
fn a_demo_with_no_committed_round_is_failed_as_a_fleet_job_would_be() {
    // One status rule for every runner (the fleet's coordinator uses it too).
    let sb = Sandbox::new();
    let d = sb.json(&[
        "demo",
        "--clients",
        "4",
        "--min-clients",
        "4",
        "--dropout",
        "0.9",
        "--rounds",
        "2",
        "--seed",
        "1",
        "--no-baseline",
        "--json",
    ]);
    assert_eq!(d["rounds_committed"], 0, "{d}");
    assert_eq!(d["status"], "failed", "{d}");
}

#[test]
fn compressed_uploads_are_smaller_and_still_train() {
    let sb = Sandbox::new();
    let run = |form: &str| {
        let d = sb.json(&[
            "demo",
            "--rounds",
            "12",
            "--compress",
            form,
            "--seed",
            "5",
            "--json",
        ]);
        let up: u64 = d["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["upload_bytes"].as_u64().unwrap())
            .sum();
        (
            d["final_accuracy"].as_f64().unwrap(),
            up,
            d["rounds_committed"].as_u64(),
        )
    };
    let (dense_acc, dense_up, _) = run("none");
    let (q8_acc, q8_up, q8_rounds) = run("q8");
    let (topk_acc, topk_up, topk_rounds) = run("topk:0.01");
    assert_eq!((q8_rounds, topk_rounds), (Some(12), Some(12)));
    let (q8_ratio, topk_ratio) = (
        dense_up as f64 / q8_up as f64,
        dense_up as f64 / topk_up as f64,
    );
    assert!((3.5..4.1).contains(&q8_ratio), "q8 {q8_ratio}");
    assert!(topk_ratio >= 50.0, "top-k {topk_ratio}");
    // Short runs: the full comparison over 3 seeds is in BENCHMARKS.md.
    assert!(
        q8_acc > dense_acc - 0.03 && topk_acc > 0.8,
        "{dense_acc} {q8_acc} {topk_acc}"
    );
    // Compression is for plaintext rounds; secure aggregation has its own.
    let e = sb.fails_with(
        &["demo", "--secure-aggregation", "--compress", "q8"],
        "E020",
    );
    assert!(e.contains("plaintext"), "{e}");
    sb.fails_with(&["demo", "--compress", "topk:2"], "E020");
}

#[test]
fn info_and_completion_work() {
    let sb = Sandbox::new();
    let info = sb.json(&["info", "--json"]);
    assert!(info["version"].is_string() && info["cpu_features"].is_array());
    let out = sb.run(&["completion", "bash"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("tensorguard"));
}

/// kill -9 in the middle of a run, at several points: every round committed
/// before the kill is readable afterwards, model blobs match their hashes, and
/// SQLite's integrity check passes.
#[test]
fn kill_dash_nine_never_loses_or_corrupts_committed_rounds() {
    for (attempt, min_rounds) in [(0, 1u64), (1, 3), (2, 6)] {
        let sb = Sandbox::new();
        let mut child = sb
            .cmd()
            .args([
                "demo",
                "--clients",
                "4",
                "--rounds",
                "100000",
                "--no-baseline",
                "--json",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut seen_committed = 0;
        while started.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(20 + 37 * attempt));
            if !sb.data().join(tg_store::DB_FILE).exists() {
                continue;
            }
            let out = sb.run(&["runs", "list", "--json"]);
            if let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) {
                seen_committed = v["runs"][0]["rounds_committed"].as_u64().unwrap_or(0);
                if seen_committed >= min_rounds {
                    break;
                }
            }
        }
        assert!(seen_committed >= min_rounds, "demo made no progress");
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();

        let list = sb.json(&["runs", "list", "--json"]);
        let run = &list["runs"][0];
        assert_eq!(run["status"], "interrupted", "{run}");
        let id = run["run_id"].as_str().unwrap();
        let show = sb.json(&["runs", "show", id, "--json"]);
        let rounds = show["rounds"].as_array().unwrap();
        assert!(rounds.len() as u64 >= seen_committed);
        for (i, r) in rounds.iter().enumerate() {
            assert_eq!(
                r["round"].as_u64().unwrap(),
                i as u64 + 1,
                "rounds are contiguous"
            );
        }

        let store = tg_store::Store::open_existing(&sb.data()).unwrap();
        store.integrity_check().unwrap();
        for r in store.rounds(id).unwrap() {
            if let Some(sha) = r.model_sha256 {
                let bytes = store.blobs().get(&sha).unwrap();
                tg_types_check(&bytes);
            }
        }
    }
}

fn tg_types_check(bytes: &[u8]) {
    // A committed model is a complete safetensors file.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert!(bytes.len() > 8 + n, "truncated model blob");
}
