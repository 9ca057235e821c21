//! End-to-end tests of `tensorguard privacy`.
#![allow(clippy::unwrap_used)]

mod common;

use common::Sandbox;

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
