//! Known answers for the Skellam accountant, from tests/data/skellam_reference.json
//! (60-digit evaluation of the published bounds by
//! scripts/privacy/make_skellam_reference.py).

use serde_json::Value;
use tg_privacy::{Delta, SamplingRate, SkellamParams, skellam_epsilon};

#[test]
fn skellam_epsilon_matches_the_high_precision_reference() {
    let text = include_str!("data/skellam_reference.json");
    let v: Value = serde_json::from_str(text).expect("parses");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for c in cases {
        let f = |k: &str| c[k].as_f64();
        let (l2, mu, s) = (
            f("l2").unwrap(),
            f("variance").unwrap(),
            f("scale").unwrap(),
        );
        let dim = c["dim"].as_u64();
        let mut p = match (f("l1"), dim) {
            (Some(l1), _) => SkellamParams::new(l1, l2, mu, s).unwrap(),
            (None, Some(d)) => SkellamParams::for_dimension(l2, d, mu, s).unwrap(),
            _ => panic!("case needs l1 or dim: {c}"),
        };
        if let (Some(beta), Some(d)) = (f("rounding_beta"), dim) {
            p = p.with_rounding(d, beta).unwrap();
        }
        let (eps, order) = skellam_epsilon(
            &p,
            SamplingRate::new(f("q").unwrap()).unwrap(),
            c["steps"].as_u64().unwrap(),
            Delta::new(f("delta").unwrap()).unwrap(),
        );
        let want = f("epsilon").unwrap();
        assert!(
            (eps - want).abs() <= 1e-9 * want.abs().max(1e-12),
            "{c}: got {eps} (order {order})"
        );
        assert_eq!(order, f("optimal_order").unwrap(), "{c}");
    }
}
