#![allow(clippy::unwrap_used)] // test inputs are valid by construction
//! Monotonicity and composition properties of the accountants.

use proptest::prelude::*;
use tg_privacy::{Delta, NoiseMultiplier, RdpAccountant, SamplingRate};

fn rdp_eps(q: f64, s: f64, t: u64, d: f64) -> f64 {
    let mut acc = RdpAccountant::default();
    acc.compose(
        SamplingRate::new(q).unwrap(),
        NoiseMultiplier::new(s).unwrap(),
        t,
    );
    acc.epsilon(Delta::new(d).unwrap()).0
}

fn pld_eps(q: f64, s: f64, t: u64, d: f64) -> f64 {
    tg_privacy::pld::epsilon(
        &[(
            SamplingRate::new(q).unwrap(),
            NoiseMultiplier::new(s).unwrap(),
            t,
        )],
        Delta::new(d).unwrap(),
        tg_privacy::pld::DEFAULT_INTERVAL,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn rdp_epsilon_is_monotone(q in 0.001f64..0.5, s in 0.6f64..8.0, t in 1u64..5000, d in 1e-8f64..1e-3) {
        let e = rdp_eps(q, s, t, d);
        prop_assert!(rdp_eps(q, s, t + t / 2 + 1, d) >= e, "more steps");
        prop_assert!(rdp_eps((q * 1.5).min(1.0), s, t, d) >= e, "larger q");
        prop_assert!(rdp_eps(q, s * 1.2, t, d) <= e, "more noise");
        prop_assert!(rdp_eps(q, s, t, (d * 3.0).min(0.5)) <= e, "larger δ");
    }

    #[test]
    fn composing_single_steps_equals_composing_at_once(q in 0.001f64..1.0, s in 0.5f64..10.0, t in 1u64..60) {
        let mut one_by_one = RdpAccountant::default();
        for _ in 0..t {
            one_by_one.compose(SamplingRate::new(q).unwrap(), NoiseMultiplier::new(s).unwrap(), 1);
        }
        let mut at_once = RdpAccountant::default();
        at_once.compose(SamplingRate::new(q).unwrap(), NoiseMultiplier::new(s).unwrap(), t);
        for (a, b) in one_by_one.rdp().iter().zip(at_once.rdp()) {
            prop_assert!((a - b).abs() <= 1e-12 * b.abs().max(1e-300), "{a} vs {b}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn pld_epsilon_is_monotone_and_below_rdp(q in 0.005f64..0.3, s in 0.8f64..4.0, t in 1u64..400) {
        let d = 1e-5;
        let e = pld_eps(q, s, t, d);
        prop_assert!(pld_eps(q, s, t * 2, d) >= e - 1e-9, "more steps");
        prop_assert!(pld_eps(q, s * 1.25, t, d) <= e + 1e-9, "more noise");
        prop_assert!(e <= rdp_eps(q, s, t, d) + 1e-9, "PLD is the tighter bound");
    }
}

#[test]
fn pld_composition_of_parts_equals_the_whole() {
    let (q, s) = (
        SamplingRate::new(0.02).unwrap(),
        NoiseMultiplier::new(1.2).unwrap(),
    );
    let d = Delta::new(1e-5).unwrap();
    let whole = tg_privacy::pld::epsilon(&[(q, s, 300)], d, 1e-4);
    let parts = tg_privacy::pld::epsilon(&[(q, s, 100), (q, s, 200)], d, 1e-4);
    assert!((whole - parts).abs() < 1e-4, "{whole} vs {parts}");
}
