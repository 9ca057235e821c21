//! A coordinator and 10 agent processes finish 5 secure-aggregation rounds of
//! the digits job; the committed model equals, within quantization, what the
//! in-process engine computes from the same seed.

use std::time::Duration;

use crate::common::*;

#[test]
fn ten_agents_five_secure_rounds_match_the_in_process_engine() {
    let mut fleet = Fleet::new(&JobOpts::default());
    let addr = fleet.start_coordinator();
    fleet.start_agents(10, &addr);
    let (status, summary) = fleet.wait_coordinator(Duration::from_secs(600));
    assert!(status.success(), "{}", fleet.log("coordinator.err"));
    assert_eq!(summary["rounds_committed"], 5, "{summary}");
    let job = summary["job"].as_str().unwrap().to_owned();
    // Every agent saw the job through and exited cleanly.
    fleet.agents_exit_cleanly(10);
    let networked = latest_model(&fleet.coord_dir(), &job);

    // The same job in one process.
    let inproc_dir = fleet.root.path().join("inproc");
    let out = tg_command()
        .arg("--data-dir")
        .arg(&inproc_dir)
        .args([
            "--json",
            "demo",
            "--clients",
            "10",
            "--rounds",
            "5",
            "--min-clients",
            "6",
            "--partition",
            "iid",
            "--seed",
            "42",
            "--secure-aggregation",
            "--bits",
            "20",
            "--secagg-clip",
            "10",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let demo: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let local = latest_model(&inproc_dir, demo["run_id"].as_str().unwrap());
    let diff = max_abs_diff(&networked, &local);
    let scale = local.values().map(|v| v.abs()).fold(0.0f32, f32::max);
    eprintln!("max |networked − in-process| = {diff:e} (largest weight {scale})");
    assert!(diff < 1e-3 * scale.max(1.0), "models differ by {diff}");
    let acc = summary["final_accuracy"].as_f64().unwrap();
    let acc_local = demo["final_accuracy"]
        .as_f64()
        .or(demo["accuracy"].as_f64())
        .unwrap_or(acc);
    assert!(
        (acc - acc_local).abs() < 0.01,
        "accuracy {acc} vs {acc_local}"
    );
}
