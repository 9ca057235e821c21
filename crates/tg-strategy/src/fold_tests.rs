//! The fold's properties and its red-team tests.
use super::*;
use proptest::prelude::*;

fn p(vals: Vec<f32>) -> Parameters {
    Parameters::new(vec![NamedTensor {
        name: "w".into(),
        shape: vec![vals.len()],
        data: vals,
    }])
    .unwrap()
}

fn upd(i: usize, vals: Vec<f32>, n: u64) -> ClientUpdate {
    ClientUpdate {
        agent: AgentId::numbered(i),
        update: p(vals),
        num_examples: n,
        control_delta: None,
    }
}

proptest! {
    #[test]
    fn the_sum_does_not_depend_on_arrival_order(
        rows in proptest::collection::vec(
            (proptest::collection::vec(-1000f32..1000.0, 8), 1u64..5000), 1..12),
        seed in any::<u64>(),
    ) {
        let ups: Vec<_> = rows.iter().enumerate()
            .map(|(i, (v, n))| upd(i, v.clone(), *n)).collect();
        let mut order: Vec<usize> = (0..ups.len()).collect();
        // A seeded shuffle.
        let mut s = seed;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let g = p(vec![0.0; 8]);
        let mut a = Fold::new(FoldRule::examples(), &g, ups.len());
        let mut b = Fold::new(FoldRule::examples(), &g, ups.len());
        for u in &ups { a.add(u).unwrap(); }
        for &i in &order { b.add(&ups[i]).unwrap(); }
        prop_assert_eq!(a.mean().unwrap(), b.mean().unwrap());
        // And it agrees with the f64 weighted mean to the grid's resolution.
        let total: u64 = rows.iter().map(|r| r.1).sum();
        let mean = a.mean().unwrap();
        for (j, m) in mean.values().enumerate() {
            let want: f64 = rows.iter().map(|(v, n)| f64::from(v[j]) * *n as f64).sum::<f64>()
                / total as f64;
            prop_assert!((f64::from(m) - want).abs() <= 1e-6 * want.abs().max(1.0));
        }
    }
}

proptest! {
    #[test]
    fn quantising_rounds_as_f64_round_and_truncates_toward_zero(
        v in any::<f32>(), factor in 0.0f64..=1.0,
    ) {
        let x = f64::from(v) * factor * SCALE;
        let t = |truncate| Term { factor, truncate, weight: 1, limit: i64::MAX }.of(v);
        // The quantiser's bound is |x| < 2⁶² exactly (a product with a
        // weight then fits or is refused).
        if x.is_finite() && x.abs() < 2f64.powi(62) {
            prop_assert_eq!(t(false), Some(x.round() as i64));
            prop_assert_eq!(t(true), Some(x.trunc() as i64));
        } else {
            prop_assert_eq!(t(false), None);
        }
    }
}

#[test]
fn an_overflowing_update_is_refused_whole() {
    let g = p(vec![0.0; 3]);
    let mut f = Fold::new(FoldRule::examples(), &g, 4);
    f.add(&upd(0, vec![1.0, 2.0, 3.0], 1)).unwrap();
    let before = f.sum.clone();
    let e = f.add(&upd(1, vec![1.0, 1.0, 3.0e9], 1_000)).unwrap_err();
    assert!(e.to_string().contains("exact range"), "{e}");
    assert_eq!(f.sum, before);
    assert_eq!(f.count(), 1);
    assert_eq!(f.weight(), 1);
}

#[test]
fn duplicates_bad_layouts_and_missing_controls_are_refused() {
    let g = p(vec![0.0; 2]);
    let mut f = Fold::new(FoldRule::examples(), &g, 4);
    f.add(&upd(0, vec![1.0, 2.0], 1)).unwrap();
    assert!(f.add(&upd(0, vec![1.0, 2.0], 1)).is_err());
    assert!(f.add(&upd(1, vec![1.0], 1)).is_err());
    assert!(f.add(&upd(2, vec![f32::NAN, 1.0], 1)).is_err());
    let rule = FoldRule {
        weighting: Weighting::Uniform,
        clip: None,
        control: true,
        keep: false,
    };
    let mut s = Fold::new(rule, &g, 4);
    assert!(matches!(
        s.add(&upd(0, vec![1.0, 2.0], 1)),
        Err(StrategyError::MissingField { .. })
    ));
    assert_eq!(s.count(), 0);
}

#[test]
fn one_agent_cannot_crowd_the_others_out_of_the_range() {
    // Red team: the first reply, with a huge example count, used to fill
    // every lane to i64::MAX so that each honest update overflowed.
    let g = p(vec![0.0; 3]);
    let mut f = Fold::new(FoldRule::examples(), &g, 3);
    let tiny = 2f32.powi(-32);
    let e = f
        .add(&upd(9, vec![tiny, -tiny, tiny], i64::MAX as u64))
        .unwrap_err();
    assert!(e.to_string().contains("exact range"), "{e}");
    // At the limit itself it is accepted, and still crowds nobody out.
    let at_limit = term_limit(3) as u64;
    f.add(&upd(8, vec![tiny, tiny, tiny], at_limit)).unwrap();
    f.add(&upd(0, vec![1.0, 1.0, 1.0], 1)).unwrap();
    assert_eq!(f.count(), 2);
    // A fourth update is more than the round selected.
    f.add(&upd(1, vec![1.0, 1.0, 1.0], 1)).unwrap();
    assert!(f.add(&upd(2, vec![1.0, 1.0, 1.0], 1)).is_err());
}

#[test]
fn a_weight_overflow_leaves_nothing_behind() {
    let g = p(vec![0.0; 2]);
    let mut f = Fold::new(FoldRule::examples(), &g, 3);
    f.add(&upd(0, vec![0.0, 0.0], i64::MAX as u64)).unwrap();
    f.add(&upd(1, vec![0.0, 0.0], i64::MAX as u64)).unwrap();
    let before = f.sum.clone();
    assert!(f.add(&upd(2, vec![5.0, -5.0], 2)).is_err());
    assert_eq!(f.sum, before);
    assert_eq!(f.count(), 2);
}

#[test]
fn more_values_than_the_shape_says_is_refused_not_a_panic() {
    // Parameters decoded without `Parameters::new` can carry extra values.
    let view = tg_types::view::ParametersView {
        tensors: vec![tg_types::view::TensorView {
            name: "w".into(),
            shape: vec![2],
            data: &[0; 12],
        }],
    };
    let bytes = postcard::to_stdvec(&view).unwrap();
    let ragged: Parameters = postcard::from_bytes(&bytes).unwrap();
    let g = p(vec![0.0; 2]);
    let mut f = Fold::new(FoldRule::examples(), &g, 2);
    let u = ClientUpdate {
        agent: AgentId::numbered(0),
        update: ragged,
        num_examples: 1,
        control_delta: None,
    };
    assert!(f.add(&u).is_err());
    assert!(f.add(&upd(1, vec![1.0, 1.0], 1)).is_ok());
}

proptest! {
    #[test]
    fn a_clipped_update_stays_within_the_clip_after_quantising(
        vals in proptest::collection::vec(-1.0e3f32..1.0e3, 1..64),
        c in 1e-6f64..10.0,
    ) {
        let g = p(vec![0.0; vals.len()]);
        let rule = FoldRule { weighting: Weighting::Uniform, clip: Some(c), control: false, keep: false };
        let mut f = Fold::new(rule, &g, 1);
        f.add(&upd(0, vals, 1)).unwrap();
        let norm = f.sum_f64().iter().map(|x| x * x).sum::<f64>().sqrt();
        prop_assert!(norm <= c * (1.0 + 1e-12), "{norm} > {c}");
    }
}

#[test]
fn clipping_scales_to_the_norm() {
    let g = p(vec![0.0; 2]);
    let rule = FoldRule {
        weighting: Weighting::Uniform,
        clip: Some(1.0),
        control: false,
        keep: false,
    };
    let mut f = Fold::new(rule, &g, 4);
    f.add(&upd(0, vec![3.0, 4.0], 7)).unwrap();
    f.add(&upd(1, vec![0.1, 0.0], 9)).unwrap();
    assert_eq!(f.unclipped(), 1);
    let s = f.sum_f64();
    assert!(
        (s[0] - 0.7).abs() < 1e-7 && (s[1] - 0.8).abs() < 1e-7,
        "{s:?}"
    );
}

#[test]
fn a_keeping_fold_keeps_each_accepted_update_whole_in_canonical_order() {
    let g = p(vec![0.0, 0.0]);
    let mut f = Fold::new(FoldRule::examples().keeping(), &g, 3);
    f.add(&upd(2, vec![1.0, 2.0], 5)).unwrap();
    f.add(&upd(1, vec![-1.0, 0.5], 3)).unwrap();
    // A refused update leaves nothing kept.
    assert!(f.add(&upd(3, vec![f32::NAN, 0.0], 1)).is_err());
    let kept = f.kept();
    assert_eq!(kept.len(), 2);
    assert!(kept[0].agent < kept[1].agent);
    assert_eq!(kept[0].update.tensors()[0].data, vec![-1.0, 0.5]);
    assert_eq!((kept[0].num_examples, kept[1].num_examples), (3, 5));
    // A rule that does not keep keeps nothing.
    let mut plain = Fold::new(FoldRule::examples(), &g, 3);
    plain.add(&upd(1, vec![1.0, 1.0], 1)).unwrap();
    assert!(plain.kept().is_empty());
}
