//! End-to-end tests of `tensorguard privacy`.
#![allow(clippy::unwrap_used)]

use crate::common::Sandbox;

#[test]
fn privacy_commands_answer_and_refuse_bad_parameters() {
    let sb = Sandbox::new();
    let plan = [
        "--sampling-rate",
        "0.004266666666666667",
        "--steps",
        "14062",
        "--delta",
        "1e-5",
    ];
    let mut args = vec!["privacy", "epsilon", "--noise-multiplier", "1.1", "--json"];
    args.extend(plan);
    let rdp = sb.json(&args);
    assert_eq!(rdp["accountant"], "rdp");
    assert!(
        (rdp["epsilon"].as_f64().unwrap() - 2.596556).abs() < 1e-5,
        "{rdp}"
    );
    assert!(rdp["optimal_order"].is_number());
    args.extend(["--accountant", "pld"]);
    let pld = sb.json(&args);
    assert!(
        (pld["epsilon"].as_f64().unwrap() - 2.381598).abs() < 1e-4,
        "{pld}"
    );
    assert!(pld.get("optimal_order").is_none());

    let mut cal = vec!["privacy", "calibrate", "--target-epsilon", "3", "--json"];
    cal.extend(plan);
    let c = sb.json(&cal);
    let sigma = c["noise_multiplier"].as_f64().unwrap();
    let mut back = vec!["privacy", "epsilon", "--json"];
    let sigma_text = sigma.to_string();
    back.extend(["--noise-multiplier", &sigma_text]);
    back.extend(plan);
    assert!(sb.json(&back)["epsilon"].as_f64().unwrap() <= 3.0);

    // (σ, q, steps, δ, expected code): each parameter out of its domain once.
    let cases = [
        ("0", "0.01", "10", "1e-5", "E060"),
        ("-1", "0.01", "10", "1e-5", "E060"),
        ("1", "1.5", "10", "1e-5", "E060"),
        ("1", "0", "10", "1e-5", "E060"),
        ("1", "0.01", "10", "1", "E060"),
        ("1", "0.01", "10", "0", "E060"),
        ("1", "0.01", "0", "1e-5", "E020"),
    ];
    for (sigma, q, steps, delta, code) in cases {
        let args = [
            "privacy",
            "epsilon",
            "--noise-multiplier",
            sigma,
            "--sampling-rate",
            q,
            "--steps",
            steps,
            "--delta",
            delta,
        ];
        sb.fails_with(&args, code);
    }
    let err = sb.fails_with(
        &[
            "privacy",
            "calibrate",
            "--target-epsilon",
            "0.001",
            "--sampling-rate",
            "1",
            "--steps",
            "100000",
            "--delta",
            "1e-10",
        ],
        "E061",
    );
    assert!(err.contains("raise the target"), "{err}");
}

#[test]
fn skellam_epsilon_from_the_cli_and_its_errors() {
    let sb = Sandbox::new();
    let base = [
        "privacy",
        "epsilon",
        "--accountant",
        "skellam",
        "--sampling-rate",
        "0.1",
        "--steps",
        "100",
        "--delta",
        "1e-5",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--l2-sensitivity",
        "1",
        "--dimension",
        "1000",
        "--variance",
        "1",
        "--scale",
        "50",
        "--json",
    ]);
    let v = sb.json(&args);
    assert_eq!(v["accountant"], "skellam");
    // tests/data/skellam_reference.json, case 3 (60-digit evaluation).
    assert!(
        (v["epsilon"].as_f64().unwrap() - 9.830_424_000_841_61).abs() < 1e-8,
        "{v}"
    );
    let cases: &[(&[&str], &str)] = &[
        (&["--l2-sensitivity", "1", "--dimension", "10"], "E020"), // no variance
        (&["--variance", "1", "--dimension", "10"], "E020"),       // no Δ₂
        (&["--variance", "1", "--l2-sensitivity", "1"], "E020"),   // no Δ₁ or d
        (
            &[
                "--variance",
                "-1",
                "--l2-sensitivity",
                "1",
                "--dimension",
                "10",
            ],
            "E060",
        ),
        (
            &[
                "--variance",
                "1",
                "--l2-sensitivity",
                "1",
                "--dimension",
                "10",
                "--noise-multiplier",
                "1",
            ],
            "E020",
        ),
    ];
    for (extra, code) in cases {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        sb.fails_with(&a, code);
    }
    sb.fails_with(
        &[
            "privacy",
            "epsilon",
            "--sampling-rate",
            "0.1",
            "--steps",
            "10",
            "--delta",
            "1e-5",
            "--variance",
            "2",
        ],
        "E020",
    );
    sb.fails_with(
        &[
            "privacy",
            "calibrate",
            "--accountant",
            "skellam",
            "--target-epsilon",
            "1",
            "--sampling-rate",
            "0.1",
            "--steps",
            "10",
            "--delta",
            "1e-5",
        ],
        "E020",
    );
}
