//! End-to-end tests of `demo --secure-aggregation`.
#![allow(clippy::unwrap_used)]

use crate::common::Sandbox;

#[test]
fn secure_aggregation_matches_the_plaintext_demo() {
    let sb = Sandbox::new();
    let args = ["demo", "--rounds", "15", "--no-baseline", "--json"];
    let plain = sb.json(&args);
    let mut secure_args = args.to_vec();
    secure_args.push("--secure-aggregation");
    let secure = sb.json(&secure_args);
    let (p, s) = (
        plain["final_accuracy"].as_f64().unwrap(),
        secure["final_accuracy"].as_f64().unwrap(),
    );
    assert!((p - s).abs() <= 0.005, "plaintext {p} vs secure {s}");
    assert_eq!(secure["rounds_committed"], 15);
    assert_eq!(secure["secure_aggregation"]["bits"], 20);
}

#[test]
fn secure_aggregation_survives_dropouts_and_refuses_what_it_cannot_do() {
    let sb = Sandbox::new();
    let v = sb.json(&[
        "demo",
        "--rounds",
        "6",
        "--dropout",
        "0.2",
        "--secure-aggregation",
        "--no-baseline",
        "--json",
    ]);
    // Malicious-setting thresholds need more than half of each
    // neighbourhood to survive a round (docs/THREAT_MODEL.md), so 20%
    // dropouts on 10 clients, not 30%.
    let committed = v["rounds_committed"].as_u64().unwrap();
    assert!(committed >= 3, "{v}");
    let base = [
        "demo",
        "--rounds",
        "2",
        "--no-baseline",
        "--secure-aggregation",
    ];
    for (extra, code) in [
        (&["--bits", "2"][..], "E020"),
        (&["--secagg-clip", "0"][..], "E020"),
        (&["--strategy", "scaffold"][..], "E020"),
    ] {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        sb.fails_with(&a, code);
    }
}

#[test]
fn shared_random_k_cuts_the_upload_and_still_trains() {
    let sb = Sandbox::new();
    let run = |extra: &[&str]| {
        let mut a = vec![
            "demo",
            "--rounds",
            "15",
            "--no-baseline",
            "--json",
            "--secure-aggregation",
        ];
        a.extend_from_slice(extra);
        sb.json(&a)
    };
    let full = run(&[]);
    let sparse = run(&["--sparsity", "0.25"]);
    let up = |v: &serde_json::Value| v["history"][0]["upload_bytes"].as_f64().unwrap();
    assert!(
        up(&sparse) < 0.35 * up(&full),
        "{} vs {}",
        up(&sparse),
        up(&full)
    );
    let acc = sparse["final_accuracy"].as_f64().unwrap();
    assert!(
        acc > full["final_accuracy"].as_f64().unwrap() - 0.03,
        "{acc}"
    );
    sb.fails_with(&["demo", "--rounds", "2", "--sparsity", "0.5"], "E020");
    sb.fails_with(
        &[
            "demo",
            "--rounds",
            "2",
            "--secure-aggregation",
            "--sparsity",
            "0",
        ],
        "E020",
    );
}

#[test]
fn distributed_dp_spends_exactly_its_budget_under_secure_aggregation() {
    let sb = Sandbox::new();
    let v = sb.json(&[
        "demo",
        "--dp",
        "distributed",
        "--target-epsilon",
        "4",
        "--population",
        "60",
        "--fraction",
        "0.5",
        "--partition",
        "iid",
        "--rounds",
        "3",
        "--no-baseline",
        "--json",
    ]);
    assert_eq!(v["accountant"], "skellam", "{v}");
    assert_eq!(v["dp"], "distributed");
    let eps = v["epsilon"].as_f64().unwrap();
    assert!(eps <= 4.0 && eps > 3.99, "{eps}");
    assert!(v["secure_aggregation"].is_object());
    let history = v["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    assert!(
        history
            .iter()
            .all(|r| r["epsilon"].as_f64().unwrap() <= 4.0)
    );
    // Adaptive clipping and too few bits are refused up front.
    sb.fails_with(
        &[
            "demo",
            "--dp",
            "distributed",
            "--target-epsilon",
            "4",
            "--clip",
            "adaptive",
            "--rounds",
            "2",
        ],
        "E020",
    );
    sb.fails_with(
        &[
            "demo",
            "--dp",
            "distributed",
            "--target-epsilon",
            "0.01",
            "--bits",
            "8",
            "--rounds",
            "2",
        ],
        "E061",
    );
}

#[test]
fn every_distributed_dp_ledger_row_recomputes_from_its_release_and_covers_the_noise_present() {
    let sb = Sandbox::new();
    let v = sb.json(&[
        "demo",
        "--dp",
        "distributed",
        "--target-epsilon",
        "6",
        "--population",
        "60",
        "--fraction",
        "0.5",
        "--partition",
        "iid",
        "--rounds",
        "4",
        "--no-baseline",
        "--json",
    ]);
    let job = v["run_id"].as_str().unwrap();
    let store = tg_store::Store::open(&sb.data()).unwrap();
    let ledger = store.ledger(job).unwrap();
    let rounds = store.rounds(job).unwrap();
    assert_eq!(ledger.len(), 4, "{v}");
    let mut above_floor = 0;
    for (k, row) in ledger.iter().enumerate() {
        let r = row
            .release
            .as_ref()
            .expect("distributed rows carry their release");
        let steps = (k + 1) as u64;
        // Recomputed through the CLI from the row alone, with and without
        // sampling amplification.
        for (amplified, want) in [(true, row.epsilon_after), (false, r.epsilon_vs_coordinator)] {
            let cmd = r.command(steps, row.delta.get(), amplified);
            let args: Vec<&str> = cmd.split_whitespace().skip(1).chain(["--json"]).collect();
            let got = sb.json(&args)["epsilon"].as_f64().unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want.max(1.0),
                "round {}: {cmd} gives {got}, the row says {want}",
                row.round
            );
        }
        assert!(r.epsilon_vs_coordinator >= row.epsilon_after);
        // The noise actually present: every survivor added its share.
        let record = rounds.iter().find(|x| x.round == row.round).unwrap();
        if record.status != tg_types::record::RoundStatus::Committed {
            continue;
        }
        assert!(
            record.participants >= r.survivor_floor,
            "round {}: {} survivors below the floor {}",
            row.round,
            record.participants,
            r.survivor_floor
        );
        if record.participants > r.survivor_floor {
            above_floor += 1;
        }
        let present = f64::from(record.participants) * r.per_client_variance / (r.scale * r.scale);
        let params =
            tg_privacy::SkellamParams::for_dimension(r.clip, r.dimension, present, r.scale)
                .unwrap()
                .with_rounding(r.dimension, 0.0)
                .unwrap();
        let one_round = |mu_params: &tg_privacy::SkellamParams| {
            tg_privacy::skellam_epsilon(
                mu_params,
                tg_privacy::SamplingRate::new(r.sampling_rate).unwrap(),
                1,
                row.delta,
            )
            .0
        };
        let charged = tg_privacy::SkellamParams::for_dimension(
            r.clip,
            r.dimension,
            r.variance_unscaled,
            r.scale,
        )
        .unwrap()
        .with_rounding(r.dimension, 0.0)
        .unwrap();
        assert!(
            one_round(&params) <= one_round(&charged) + 1e-12,
            "round {}: the noise present spends more than the row charged",
            row.round
        );
    }
    assert!(
        above_floor > 0,
        "no round had more survivors than its floor"
    );
}

#[test]
fn a_budget_against_the_coordinator_stops_on_the_unamplified_epsilon() {
    let sb = Sandbox::new();
    let run = |against: &str| {
        sb.json(&[
            "demo",
            "--dp",
            "distributed",
            "--target-epsilon",
            "8",
            "--population",
            "60",
            "--fraction",
            "0.5",
            "--partition",
            "iid",
            "--rounds",
            "3",
            "--budget-against",
            against,
            "--no-baseline",
            "--json",
        ])
    };
    let others = run("others");
    let coordinator = run("coordinator");
    // The default stops on the amplified ε; against the coordinator it is
    // larger than the target.
    assert!(others["epsilon"].as_f64().unwrap() <= 8.0);
    assert!(
        others["epsilon_vs_coordinator"].as_f64().unwrap() > 8.0,
        "{others}"
    );
    // Against the coordinator the unamplified ε is what stays in budget.
    let vs = coordinator["epsilon_vs_coordinator"].as_f64().unwrap();
    assert!(vs <= 8.0 + 1e-9 && vs > 7.9, "{coordinator}");
    assert!(
        coordinator["budget_stops_on"]
            .as_str()
            .unwrap()
            .contains("against the coordinator"),
        "{coordinator}"
    );
    // Not available where it means nothing.
    sb.fails_with(
        &[
            "demo",
            "--dp",
            "central",
            "--target-epsilon",
            "3",
            "--budget-against",
            "coordinator",
            "--rounds",
            "2",
        ],
        "E020",
    );
}
