//! End-to-end tests of differentially private training: the budget stop,
//! the ledger under kill -9, the JSON report, and bad DP flags.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::Sandbox;
use serde_json::Value;

/// ε after `steps` rounds of central DP at (q, σ), by the CLI's own accountant.
fn rdp_epsilon(sb: &Sandbox, q: &str, sigma: &str, steps: u64) -> f64 {
    let steps = steps.to_string();
    let v = sb.json(&[
        "privacy",
        "epsilon",
        "--sampling-rate",
        q,
        "--noise-multiplier",
        sigma,
        "--steps",
        &steps,
        "--delta",
        "1e-5",
        "--accountant",
        "rdp",
        "--json",
    ]);
    v["epsilon"].as_f64().unwrap()
}

#[test]
fn budget_stop_ends_at_the_last_round_that_fits_and_says_so() {
    let sb = Sandbox::new();
    let (q, sigma) = ("0.5", "2");
    let after = |k| rdp_epsilon(&sb, q, sigma, k);
    // A budget that holds 4 rounds but not 5.
    let target = 0.5 * (after(4) + after(5));
    let target_s = target.to_string();
    let v = sb.json(&[
        "demo",
        "--dp",
        "central",
        "--population",
        "12",
        "--fraction",
        q,
        "--noise-multiplier",
        sigma,
        "--clip",
        "1.0",
        "--target-epsilon",
        &target_s,
        "--accountant",
        "rdp",
        "--rounds",
        "30",
        "--no-baseline",
        "--json",
    ]);
    assert_eq!(v["status"], "budget_exhausted", "{v}");
    let reason = v["reason"].as_str().unwrap();
    assert!(
        reason.contains("round 5") && reason.contains("stopped after round 4"),
        "{reason}"
    );
    let history = v["history"].as_array().unwrap();
    assert_eq!(history.len(), 4);
    for (k, r) in history.iter().enumerate() {
        let e = r["epsilon"].as_f64().unwrap();
        assert!(
            (e - after(k as u64 + 1)).abs() < 1e-9,
            "round {}: {e}",
            k + 1
        );
        assert!(e <= target);
    }
    assert_eq!(v["epsilon"].as_f64(), history[3]["epsilon"].as_f64());
    assert_eq!(v["accountant"], "rdp");
    assert_eq!(v["delta"].as_f64(), Some(1e-5));

    let id = v["run_id"].as_str().unwrap();
    let show = sb.json(&["runs", "show", id, "--json"]);
    assert_eq!(show["status"], "budget_exhausted");
    assert_eq!(show["privacy_ledger"].as_array().unwrap().len(), 4);
    let human = String::from_utf8(sb.run(&["runs", "show", id]).stdout).unwrap();
    assert!(
        human.contains("budget_exhausted") && human.contains("privacy   ε ="),
        "{human}"
    );
}

#[test]
fn local_dp_sgd_calibrates_to_the_budget_and_reports_epsilon() {
    let sb = Sandbox::new();
    let v = sb.json(&[
        "demo",
        "--dp",
        "local-sgd",
        "--target-epsilon",
        "3",
        "--rounds",
        "3",
        "--clients",
        "4",
        "--local-epochs",
        "1",
        "--no-baseline",
        "--json",
    ]);
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["dp"], "local-sgd");
    assert_eq!(v["accountant"], "pld");
    let eps = v["epsilon"].as_f64().unwrap();
    // Calibrated: all rounds fit, and the last one spends almost all of the budget.
    assert!(eps <= 3.0 && eps > 2.99, "{eps}");
    let history = v["history"].as_array().unwrap();
    let per_round: Vec<f64> = history
        .iter()
        .map(|r| r["epsilon"].as_f64().unwrap())
        .collect();
    assert!(per_round.windows(2).all(|w| w[0] < w[1]), "{per_round:?}");
    assert!(v["final_accuracy"].as_f64().unwrap() > 0.1);
}

/// kill -9 at random points of a DP run: the ledger is written before each
/// round runs, so the ε that `runs show` reports is never below what the
/// rounds that ran (committed or failed) have spent.
#[test]
fn kill_dash_nine_never_under_reports_epsilon() {
    let (q, sigma) = ("0.5", "3");
    for attempt in 0..4u64 {
        let sb = Sandbox::new();
        let mut child = sb
            .cmd()
            .args([
                "demo",
                "--dp",
                "central",
                "--population",
                "6",
                "--fraction",
                q,
                "--noise-multiplier",
                sigma,
                "--clip",
                "1.0",
                "--target-epsilon",
                "1000000",
                "--accountant",
                "rdp",
                "--rounds",
                "100000",
                "--no-baseline",
                "--json",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a pseudo-random moment after the first rounds.
        let wait = Duration::from_millis(300 + (attempt * 7919) % 900);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(25));
            if started.elapsed() > wait && sb.data().join(tg_store::DB_FILE).exists() {
                let out = sb.run(&["runs", "list", "--json"]);
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                if v["runs"][0]["rounds_committed"].as_u64().unwrap_or(0) >= 1 {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let list = sb.json(&["runs", "list", "--json"]);
        let id = list["runs"][0]["run_id"].as_str().unwrap().to_owned();
        let show = sb.json(&["runs", "show", &id, "--json"]);
        assert_eq!(show["status"], "interrupted");
        let ran = show["rounds"].as_array().unwrap().len() as u64;
        assert!(ran >= 1, "no round ran");
        let ledger = show["privacy_ledger"].as_array().unwrap();
        assert!(
            ledger.len() as u64 >= ran,
            "a round ran without a ledger entry"
        );
        let reported = show["epsilon"].as_f64().unwrap();
        let spent = rdp_epsilon(&sb, q, sigma, ran);
        assert!(
            reported >= spent - 1e-12,
            "attempt {attempt}: reported ε {reported} < spent {spent} after {ran} rounds"
        );
    }
}

#[test]
fn bad_dp_flags_get_coded_errors() {
    let sb = Sandbox::new();
    let base = ["demo", "--rounds", "2", "--no-baseline"];
    let cases: &[(&[&str], &str)] = &[
        (&["--target-epsilon", "3"], "E020"),
        (&["--dp", "central"], "E020"),
        (&["--dp", "central", "--target-epsilon", "0"], "E060"),
        (
            &["--dp", "central", "--target-epsilon", "3", "--delta", "2"],
            "E060",
        ),
        (
            &[
                "--dp",
                "central",
                "--target-epsilon",
                "3",
                "--noise-multiplier",
                "-1",
            ],
            "E060",
        ),
        (
            &[
                "--dp",
                "central",
                "--target-epsilon",
                "3",
                "--noise-multiplier",
                "lots",
            ],
            "E020",
        ),
        (
            &[
                "--dp",
                "central",
                "--target-epsilon",
                "3",
                "--fraction",
                "0.5",
                "--clip",
                "0",
            ],
            // A privacy parameter outside its domain, as in a job file.
            "E060",
        ),
        (
            &[
                "--dp",
                "central",
                "--target-epsilon",
                "3",
                "--strategy",
                "scaffold",
            ],
            "E020",
        ),
        (
            &[
                "--dp",
                "local-sgd",
                "--target-epsilon",
                "3",
                "--model",
                "cnn",
            ],
            "E020",
        ),
        (
            &[
                "--dp",
                "local-sgd",
                "--target-epsilon",
                "3",
                "--population",
                "9",
            ],
            "E020",
        ),
        (
            &[
                "--dp",
                "local-sgd",
                "--target-epsilon",
                "3",
                "--clip",
                "adaptive",
            ],
            "E020",
        ),
        (
            &[
                "--dp",
                "central",
                "--target-epsilon",
                "1e-5",
                "--accountant",
                "rdp",
            ],
            "E061",
        ),
    ];
    for (extra, code) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        sb.fails_with(&args, code);
    }
}
