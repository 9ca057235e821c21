use super::*;
use crate::{FedAvg, Sampler};
use tg_types::NamedTensor;

fn params(v: Vec<f32>) -> Parameters {
    Parameters::new(vec![NamedTensor {
        name: "w".into(),
        shape: vec![v.len()],
        data: v,
    }])
    .unwrap()
}

fn robust(kind: AggregatorKind, f: u32) -> Robust {
    let inner = Box::new(FedAvg::new(Sampler::new(1.0, 1).unwrap(), 1.0));
    Robust::new(
        inner,
        RobustSpec {
            kind,
            f,
            norm_bound: None,
        },
    )
    .unwrap()
}

/// Ten honest updates near (1, 1, 1, 1) with different norms and
/// directions, deterministic.
fn honest(i: usize) -> Vec<f32> {
    let s = 1.0 + 0.05 * (i as f32 - 4.5);
    (0..4)
        .map(|j| s * (1.0 + 0.03 * (((i * 7 + j * 3) % 5) as f32 - 2.0)))
        .collect()
}

fn round(s: &mut Robust, ups: &[Vec<f32>]) -> Result<Vec<f32>> {
    let global = params(vec![0.0; 4]);
    let results: Vec<ClientUpdate> = ups
        .iter()
        .enumerate()
        .map(|(i, u)| ClientUpdate {
            agent: AgentId::numbered(i),
            update: params(u.clone()),
            num_examples: 10,
            control_delta: None,
        })
        .collect();
    Ok(s.aggregate_train(1, &global, &results)?.values().collect())
}

#[test]
fn the_3sigma_filter_rejects_one_update_scaled_by_ten_and_names_it() {
    let mut ups: Vec<Vec<f32>> = (0..10).map(honest).collect();
    ups[3] = ups[3].iter().map(|v| v * 10.0).collect();
    let mut s = robust(AggregatorKind::Outlier3Sigma, 1);
    let next = round(&mut s, &ups).unwrap();
    let screened = s.screened();
    assert_eq!(screened.len(), 10);
    let bad = &screened[3];
    assert_eq!(bad.agent, AgentId::numbered(3));
    assert!(!bad.admitted && bad.score > 3.0, "{bad:?}");
    assert!(
        screened
            .iter()
            .filter(|x| x.agent != bad.agent)
            .all(|x| x.admitted),
        "{screened:?}"
    );
    // The mean of the nine honest updates.
    let want: Vec<f32> = (0..4)
        .map(|j| {
            (0..10)
                .filter(|&i| i != 3)
                .map(|i| honest(i)[j])
                .sum::<f32>()
                / 9.0
        })
        .collect();
    for (a, b) in next.iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{next:?} vs {want:?}");
    }
    // A clean round rejects no one (no false positive).
    let clean: Vec<Vec<f32>> = (0..10).map(honest).collect();
    round(&mut s, &clean).unwrap();
    assert!(
        s.screened().iter().all(|x| x.admitted),
        "{:?}",
        s.screened()
    );
}

#[test]
fn robust_rules_resist_two_sign_flipped_scaled_updates() {
    let mut ups: Vec<Vec<f32>> = (0..11).map(honest).collect();
    for u in ups.iter_mut().take(2) {
        *u = u.iter().map(|v| -10.0 * v).collect();
    }
    for kind in [
        AggregatorKind::Median,
        AggregatorKind::TrimmedMean,
        AggregatorKind::Krum,
        AggregatorKind::MultiKrum,
        AggregatorKind::Bulyan,
        AggregatorKind::Outlier3Sigma,
    ] {
        let next = round(&mut robust(kind, 2), &ups).unwrap();
        assert!(
            next.iter().all(|&v| (0.7..1.3).contains(&v)),
            "{kind}: {next:?}"
        );
    }
    // FedAvg is dragged far off.
    let plain = round(&mut robust(AggregatorKind::FedAvg, 0), &ups).unwrap();
    assert!(plain.iter().all(|&v| v < 0.0), "{plain:?}");
}

#[test]
fn a_round_below_the_rules_minimum_is_refused_with_its_code() {
    let ups: Vec<Vec<f32>> = (0..10).map(honest).collect();
    let err = round(&mut robust(AggregatorKind::Bulyan, 2), &ups).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, StrategyError::Rejected(_))
            && text.contains("E113")
            && text.contains("at least 11"),
        "{text}"
    );
}

#[test]
fn a_fixed_norm_bound_streams_and_clips() {
    let inner = Box::new(FedAvg::new(Sampler::new(1.0, 1).unwrap(), 1.0));
    let mut s = Robust::new(
        inner,
        RobustSpec {
            kind: AggregatorKind::NormBound,
            f: 0,
            norm_bound: Some(1.0),
        },
    )
    .unwrap();
    assert!(!s.fold_rule().keep && s.fold_rule().clip == Some(1.0));
    let next = round(&mut s, &[vec![3.0, 4.0, 0.0, 0.0], vec![0.0; 4]]).unwrap();
    // (0.6, 0.8) and 0, averaged by equal example counts.
    assert!(
        (next[0] - 0.3).abs() < 1e-6 && (next[1] - 0.4).abs() < 1e-6,
        "{next:?}"
    );
    // The median-norm bound keeps the updates and clips to the median.
    let mut m = robust(AggregatorKind::NormBound, 0);
    assert!(m.fold_rule().keep);
    let next = round(
        &mut m,
        &[
            vec![30.0, 40.0, 0.0, 0.0],
            vec![1.0, 0.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0, 0.0],
        ],
    )
    .unwrap();
    assert!(next.iter().all(|v| v.abs() <= 1.0), "{next:?}");
}

#[test]
fn results_do_not_depend_on_arrival_order() {
    let mut ups: Vec<Vec<f32>> = (0..11).map(honest).collect();
    ups[5] = vec![9.0, -9.0, 9.0, -9.0];
    let global = params(vec![0.0; 4]);
    for kind in [
        AggregatorKind::Krum,
        AggregatorKind::Bulyan,
        AggregatorKind::Median,
    ] {
        let mut models = Vec::new();
        for rev in [false, true] {
            let mut s = robust(kind, 2);
            let mut fold = Fold::new(s.fold_rule(), &global, ups.len());
            let order: Vec<usize> = if rev {
                (0..11).rev().collect()
            } else {
                (0..11).collect()
            };
            for i in order {
                fold.add(&ClientUpdate {
                    agent: AgentId::numbered(i),
                    update: params(ups[i].clone()),
                    num_examples: 1 + i as u64,
                    control_delta: None,
                })
                .unwrap();
            }
            models.push(
                s.apply(1, &global, fold)
                    .unwrap()
                    .values()
                    .collect::<Vec<f32>>(),
            );
        }
        assert_eq!(models[0], models[1], "{kind}");
    }
}

#[test]
fn an_inflated_example_count_is_capped_and_dp_is_never_wrapped() {
    // Ten honest agents (10 examples each) and one that points the other
    // way at the median norm, claiming ten million examples.
    let global = params(vec![0.0; 4]);
    let mut results: Vec<ClientUpdate> = (0..10)
        .map(|i| ClientUpdate {
            agent: AgentId::numbered(i),
            update: params(honest(i)),
            num_examples: 10,
            control_delta: None,
        })
        .collect();
    results.push(ClientUpdate {
        agent: AgentId::numbered(10),
        update: params(vec![-1.0; 4]),
        num_examples: 10_000_000,
        control_delta: None,
    });
    for kind in [AggregatorKind::NormBound, AggregatorKind::MultiKrum] {
        let f = u32::from(kind == AggregatorKind::MultiKrum);
        let next: Vec<f32> = robust(kind, f)
            .aggregate_train(1, &global, &results)
            .unwrap()
            .values()
            .collect();
        // Uncapped, the claimed count would pull every coordinate to about −1.
        assert!(next.iter().all(|&v| v > 0.3), "{kind}: {next:?}");
    }
    // A wrapper would replace central DP's clip: refused.
    let dp = crate::build_central_dp(
        &tg_types::spec::StrategyConfig::defaults_for(tg_types::spec::StrategyKind::FedAvg),
        tg_types::privacy::CentralDpSpec {
            noise_multiplier: tg_privacy::NoiseMultiplier::new(1.0).unwrap(),
            clip: tg_types::privacy::ClipSpec::Fixed {
                norm: tg_privacy::ClipNorm::new(1.0).unwrap(),
            },
            client_sampling_rate: tg_privacy::SamplingRate::new(1.0).unwrap(),
            population: 10,
        },
        tg_privacy::NoiseRng::insecure_seeded_for_tests(1),
    )
    .unwrap();
    let spec = RobustSpec {
        kind: AggregatorKind::FedAvg,
        f: 0,
        norm_bound: None,
    };
    assert!(Robust::new(dp, spec).is_err());
}

#[test]
fn the_cosine_reference_is_dropped_when_the_round_does_not_start_from_its_model() {
    let ups: Vec<Vec<f32>> = (0..10).map(honest).collect();
    let mut stateful = robust(AggregatorKind::Outlier3Sigma, 1);
    round(&mut stateful, &ups).unwrap();
    // The next round starts again from the old model (a rejected candidate
    // or a rollback): the same result as a filter that never ran.
    let mut shifted = ups.clone();
    shifted[2] = vec![-1.0, 2.0, -1.0, 2.0];
    let a = round(&mut stateful, &shifted).unwrap();
    let b = round(&mut robust(AggregatorKind::Outlier3Sigma, 1), &shifted).unwrap();
    assert_eq!(a, b);
    assert_eq!(stateful.screened(), {
        let mut fresh = robust(AggregatorKind::Outlier3Sigma, 1);
        round(&mut fresh, &shifted).unwrap();
        fresh.screened()
    });
}

#[test]
fn every_rule_scores_a_scaled_update_as_an_outlier_and_no_honest_one() {
    let mut ups: Vec<Vec<f32>> = (0..10).map(honest).collect();
    ups[6] = ups[6].iter().map(|v| v * 10.0).collect();
    for kind in AggregatorKind::ALL {
        if kind == AggregatorKind::FedAvg {
            continue;
        }
        let mut s = robust(
            kind,
            if kind == AggregatorKind::NormBound {
                0
            } else {
                1
            },
        );
        round(&mut s, &ups).unwrap();
        let screened = s.screened();
        for x in &screened {
            let attacker = x.agent == AgentId::numbered(6);
            assert_eq!(x.outlier_z > 8.0, attacker, "{kind}: {screened:?}");
            assert!(attacker || x.outlier_z < 3.0, "{kind}: {screened:?}");
        }
    }
    // Krum leaves nine honest updates out: none of them is an outlier.
    let mut s = robust(AggregatorKind::Krum, 1);
    round(&mut s, &(0..10).map(honest).collect::<Vec<_>>()).unwrap();
    let screened = s.screened();
    assert_eq!(screened.iter().filter(|x| !x.admitted).count(), 9);
    assert!(screened.iter().all(|x| x.outlier_z < 3.0), "{screened:?}");
}

#[test]
fn reputation_weights_scale_example_counts_once() {
    let ups: Vec<Vec<f32>> = vec![vec![1.0; 4], vec![1.2; 4], vec![1.0; 4]];
    let mut s = robust(AggregatorKind::MultiKrum, 0);
    let w: std::collections::BTreeMap<AgentId, f64> =
        [(AgentId::numbered(1), 0.5)].into_iter().collect();
    s.reweigh(&w);
    // 10·0.5 examples at 1.2, 10 + 10 at 1: (6 + 20)/25 = 1.04.
    let next = round(&mut s, &ups).unwrap();
    assert!((next[0] - 1.04).abs() < 1e-6, "{next:?}");
    // The weights were for that round only: (12 + 20)/30.
    let next = round(&mut s, &ups).unwrap();
    assert!((next[0] - 32.0 / 30.0).abs() < 1e-6, "{next:?}");
}

#[test]
fn colluders_holding_the_median_cannot_make_an_honest_update_an_outlier() {
    let mut s = robust(AggregatorKind::Median, 1);
    // Honest rounds set the spread the outlier score is floored by.
    for _ in 0..5 {
        round(&mut s, &(0..10).map(honest).collect::<Vec<_>>()).unwrap();
    }
    // Six identical colluders at the mean of three honest updates: the
    // median is theirs and their spread 0; the fourth honest update (the
    // target) is an ordinary honest distance away.
    let v: Vec<f32> = (0..4)
        .map(|j| (1..4).map(|i| honest(i)[j]).sum::<f32>() / 3.0)
        .collect();
    let mut ups: Vec<Vec<f32>> = (0..4).map(honest).collect();
    ups.extend(std::iter::repeat_n(v, 6));
    round(&mut s, &ups).unwrap();
    let target = &s.screened()[0];
    assert!(target.outlier_z < 8.0, "{target:?}");
    // Without the rounds before, the floor is only this round's.
    let mut fresh = robust(AggregatorKind::Median, 1);
    round(&mut fresh, &ups).unwrap();
    assert!(
        fresh.screened()[0].outlier_z > 1e6,
        "{:?}",
        fresh.screened()[0]
    );
}
