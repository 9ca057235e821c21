//! One engine: the same job file, run in process (`demo --job`) and by a
//! coordinator with agent processes on loopback (`bench fleet --job`), ends
//! on the same model, bit for bit. The exact, order-independent fold is what
//! lets a real network's arrival order not matter; under secure aggregation
//! the masks cancel exactly and the encoding's dither is seeded.

use std::path::PathBuf;

use crate::common::*;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/examples")
        .join(name)
}

/// The job file run in process and on a loopback fleet: (demo, fleet) JSON.
fn both_runners(file: &str) -> (serde_json::Value, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let job = example(file);
    let job = job.to_str().unwrap();
    let demo = ok(&tg(
        &dir.path().join("demo"),
        &[],
        &["--json", "demo", "--job", job, "--no-baseline"],
    ));
    let fleet = ok(&tg(
        &dir.path().join("fleet"),
        &[],
        &["--json", "bench", "fleet", "--job", job],
    ));
    (demo, fleet)
}

fn same_model_in_process_and_on_a_fleet(file: &str) {
    let (demo, fleet) = both_runners(file);
    same_model(&demo, &fleet, file);
}

fn same_model(demo: &serde_json::Value, fleet: &serde_json::Value, file: &str) {
    let (a, b) = (&demo["final_model_sha256"], &fleet["final_model_sha256"]);
    assert!(a.is_string(), "{demo}");
    assert_eq!(a, b, "{file}: demo {demo}\nfleet {fleet}");
    assert_eq!(demo["rounds_committed"], demo["rounds"], "{demo}");
}

#[test]
fn fedavg_ends_on_the_same_model_in_process_and_on_a_fleet() {
    same_model_in_process_and_on_a_fleet("fedavg.toml");
}

#[test]
fn scaffold_ends_on_the_same_model_in_process_and_on_a_fleet() {
    same_model_in_process_and_on_a_fleet("scaffold.toml");
}

#[test]
fn secure_aggregation_ends_on_the_same_model_in_process_and_on_a_fleet() {
    same_model_in_process_and_on_a_fleet("fedavg-secure.toml");
}

#[test]
fn central_dp_spends_the_same_epsilon_in_process_and_on_a_fleet() {
    // The coordinator's noise comes from the OS, so the models differ; the
    // plan — and so the privacy spent — is the same.
    let (demo, fleet) = both_runners("central-dp.toml");
    let eps = demo["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps < 20.0, "{demo}");
    assert_eq!(
        demo["epsilon"], fleet["epsilon"],
        "demo {demo}\nfleet {fleet}"
    );
    // Poisson sampling (q = 0.5 of 6) picks nobody in about one round in
    // 64; that round fails but is charged all the same, so ε still agrees.
    assert!(demo["rounds_committed"].as_u64().unwrap() >= 1, "{demo}");
    assert!(fleet["final_model_sha256"].is_string(), "{fleet}");
}

#[test]
fn central_dp_with_simulated_noise_ends_on_the_same_model_and_says_so() {
    let (demo, fleet) = both_runners("central-dp-simulated.toml");
    same_model(&demo, &fleet, "central-dp-simulated.toml");
    assert_eq!(demo["epsilon"], fleet["epsilon"], "{demo}\n{fleet}");
    for out in [&demo, &fleet] {
        let label = out["simulation"].as_str().unwrap_or_default();
        assert!(label.contains("NOT private"), "unlabelled: {out}");
    }
}

#[test]
fn a_coordinator_refuses_simulated_noise_unless_allowed() {
    // Production policy: a job whose noise anyone could remove never runs
    // on a coordinator that was not started for testing.
    let dir = tempfile::tempdir().unwrap();
    let job = example("central-dp-simulated.toml");
    let o = tg(
        dir.path(),
        &[],
        &["coordinator", "start", "--job", job.to_str().unwrap()],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("E020") && err.contains("--allow-simulated"),
        "{err}"
    );
}

#[test]
fn distributed_dp_runs_on_a_fleet_from_the_same_plan() {
    // The agents' Skellam shares come from their OS, so the models differ;
    // the plan (noise, encoding, survivor floor) and the ε spent are the same.
    let (demo, fleet) = both_runners("distributed-dp.toml");
    let eps = demo["epsilon"].as_f64().unwrap();
    assert!(eps > 0.0 && eps <= 20.0, "{demo}");
    assert_eq!(
        demo["epsilon"], fleet["epsilon"],
        "demo {demo}\nfleet {fleet}"
    );
    assert_eq!(demo["rounds_committed"], demo["rounds"], "{demo}");
    assert_eq!(fleet["secure_aggregation"], true, "{fleet}");
}

#[test]
fn a_job_file_and_job_flags_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let o = tg(
        dir.path(),
        &[],
        &[
            "demo",
            "--job",
            example("fedavg.toml").to_str().unwrap(),
            "--rounds",
            "3",
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("E002"));
}
