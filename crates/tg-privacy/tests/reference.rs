//! Known-answer tests against Opacus (RDP) and dp-accounting (PLD), from
//! tests/data/reference.json (made by scripts/privacy/make_reference.py).

use serde_json::Value;
use tg_privacy::{Delta, Epsilon, NoiseMultiplier, RdpAccountant, SamplingRate, calibrate_noise};

fn reference() -> Value {
    let text = include_str!("data/reference.json");
    serde_json::from_str(text).expect("reference.json parses")
}

fn f(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

fn rdp_for(parts: &[(f64, f64, u64)]) -> RdpAccountant {
    let mut acc = RdpAccountant::new(orders()).expect("orders");
    for &(q, s, n) in parts {
        acc.compose(
            SamplingRate::new(q).expect("q"),
            NoiseMultiplier::new(s).expect("σ"),
            n,
        );
    }
    acc
}

fn orders() -> Vec<f64> {
    reference()["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(f)
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }
}

#[test]
fn rdp_matches_opacus_to_1e9_relative_at_every_order() {
    let r = reference();
    let cases = r["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20);
    let mut worst_eps: f64 = 0.0;
    for c in cases {
        let (q, s, n) = (
            f(&c["q"]),
            f(&c["sigma"]),
            c["steps"].as_u64().expect("steps"),
        );
        let acc = rdp_for(&[(q, s, n)]);
        for ((want, got), order) in c["rdp"]
            .as_array()
            .expect("rdp")
            .iter()
            .map(f)
            .zip(acc.rdp())
            .zip(acc.orders())
        {
            // Two floors below which neither value is meaningful, both scaled by
            // T/(α−1): Opacus sums ln A_α in log space with a term ≈ 1 (~ε_mach
            // each; ours computes A_α − 1 without cancellation), and at
            // fractional orders both stop the series at terms below e^−30, so
            // where each stops may differ by a term of that size.
            let per_step = if order.fract() == 0.0 {
                64.0 * f64::EPSILON
            } else {
                64.0 * f64::EPSILON + 2.0 * (-30.0f64).exp()
            };
            let floor = n as f64 * per_step / (order - 1.0);
            assert!(
                (got - want).abs() <= 1e-9 * want.abs() + floor,
                "q={q} σ={s} T={n} α={order}: {got} vs Opacus {want}"
            );
        }
        let (eps, order) = acc.epsilon(Delta::new(f(&c["delta"])).expect("δ"));
        assert!(
            rel(eps, f(&c["rdp_epsilon"])) < 1e-9,
            "q={q} σ={s} T={n}: ε {eps} vs {}",
            c["rdp_epsilon"]
        );
        assert_eq!(order, f(&c["rdp_order"]), "optimal order");
        worst_eps = worst_eps.max(rel(eps, f(&c["rdp_epsilon"])));
    }
    eprintln!("worst relative ε difference from Opacus: {worst_eps:.2e}");
}

#[test]
fn heterogeneous_composition_matches_opacus() {
    for h in reference()["heterogeneous"].as_array().expect("hetero") {
        let parts: Vec<(f64, f64, u64)> = h["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .map(|p| (f(&p[0]), f(&p[1]), p[2].as_u64().expect("steps")))
            .collect();
        let (eps, _) = rdp_for(&parts).epsilon(Delta::new(f(&h["delta"])).expect("δ"));
        assert!(
            rel(eps, f(&h["rdp_epsilon"])) < 1e-9,
            "{parts:?}: {eps} vs {}",
            h["rdp_epsilon"]
        );
    }
}

#[test]
fn rdp_calibration_matches_to_1e6() {
    for c in reference()["calibration"].as_array().expect("calibration") {
        let (q, n, d) = (
            f(&c["q"]),
            c["steps"].as_u64().expect("steps"),
            f(&c["delta"]),
        );
        let sigma = calibrate_noise(Epsilon::new(f(&c["target_epsilon"])).expect("ε"), |s| {
            let mut acc = RdpAccountant::new(orders()).expect("orders");
            acc.compose(SamplingRate::new(q).expect("q"), s, n);
            acc.epsilon(Delta::new(d).expect("δ")).0
        })
        .expect("reachable");
        let want = f(&c["rdp_noise_multiplier"]);
        assert!(
            (sigma.get() - want).abs() < 1e-6,
            "{c}: σ {} vs {want}",
            sigma.get()
        );
    }
}

#[test]
fn pld_matches_dp_accounting_at_a_fine_grid_to_1e4() {
    let r = reference();
    let mut checked = 0;
    let mut worst = (0.0f64, String::new());
    for c in r["cases"].as_array().expect("cases") {
        // dp-accounting's pessimistic PLD is an upper bound on ε at every grid;
        // where a 1e-6 grid was also computed, the smaller of the two bounds is
        // the reference (its 1e-5 grid over-states ε when one step's loss
        // spread is near 1e-5; its 1e-6 grid is not always tighter).
        let Some(coarse) = c["pld_epsilon"].as_f64() else {
            continue;
        };
        let want = c["pld_epsilon_1e6"]
            .as_f64()
            .map_or(coarse, |fine| fine.min(coarse));
        let (q, s, n, d) = (
            f(&c["q"]),
            f(&c["sigma"]),
            c["steps"].as_u64().expect("steps"),
            f(&c["delta"]),
        );
        let got = tg_privacy::pld::epsilon(
            &[(
                SamplingRate::new(q).expect("q"),
                NoiseMultiplier::new(s).expect("σ"),
                n,
            )],
            Delta::new(d).expect("δ"),
            tg_privacy::pld::DEFAULT_INTERVAL,
        );
        let err = (got - want).abs();
        if err > worst.0 {
            worst = (
                err,
                format!("q={q} σ={s} T={n} δ={d}: {got} vs dp-accounting {want}"),
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} PLD references");
    assert!(worst.0 < 1e-4, "worst case {:.2e}: {}", worst.0, worst.1);
}
