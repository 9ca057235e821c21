//! The robust aggregators and the simulated attack suite through the
//! binary: flags, refusals with codes, and labelled output.
#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should fail the test loudly

use crate::common::Sandbox;

#[test]
fn a_simulated_attack_is_labelled_and_a_robust_rule_is_recorded() {
    let sb = Sandbox::new();
    let v = sb.json(&[
        "demo",
        "--json",
        "--no-baseline",
        "--clients",
        "12",
        "--rounds",
        "3",
        "--attack",
        "sign-flip",
        "--attackers",
        "0.2",
        "--aggregator",
        "multi-krum",
    ]);
    assert_eq!(v["attack"]["simulated"], true, "{v}");
    assert!(
        v["attack"]["label"]
            .as_str()
            .unwrap()
            .starts_with("SIMULATED ATTACK")
    );
    assert_eq!(v["attack"]["attackers"].as_array().unwrap().len(), 2);
    assert_eq!(
        (v["aggregator"].as_str(), v["byzantine"].as_u64()),
        (Some("multi-krum"), Some(2))
    );
    let screened = v["history"][0]["screened"].as_array().unwrap();
    assert_eq!(screened.len(), 12, "{v}");
}

#[test]
fn bad_attack_and_aggregator_input_gets_coded_errors() {
    let sb = Sandbox::new();
    let e = sb.fails_with(&["demo", "--attack", "flip", "--attackers", "0.2"], "E020");
    assert!(e.contains("sign-flip"), "{e}");
    let e = sb.fails_with(&["demo", "--attack", "noise", "--attackers", "0.6"], "E020");
    assert!(e.contains("0.5"), "{e}");
    let e = sb.fails_with(&["demo", "--aggregator", "krumm"], "E020");
    assert!(e.contains("multi-krum"), "{e}");
    let e = sb.fails_with(
        &[
            "demo",
            "--aggregator",
            "median",
            "--byzantine",
            "1",
            "--secure-aggregation",
        ],
        "E020",
    );
    assert!(e.contains("rollout gate"), "{e}");
    let e = sb.fails_with(
        &["demo", "--aggregator", "bulyan", "--byzantine", "3"],
        "E020",
    );
    assert!(e.contains("at least 15"), "{e}");
    // bench robust: unreadable input is a coded error, not a panic.
    let bad = sb.path().join("bad.safetensors");
    std::fs::write(&bad, b"not safetensors").unwrap();
    sb.fails_with(
        &[
            "bench",
            "robust",
            "--aggregator",
            "median",
            "--byzantine",
            "1",
            bad.to_str().unwrap(),
        ],
        "E020",
    );
}
