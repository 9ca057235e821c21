//! Averaging of client updates (accumulated in f64).

use tg_types::Parameters;

use crate::{ClientUpdate, Result, StrategyError};

/// `Σ wᵢ Δᵢ` with weights summing to one, accumulated in f64.
fn combine(results: &[ClientUpdate], weights: &[f64]) -> Result<Parameters> {
    let first = results.first().ok_or(StrategyError::NoResults)?;
    let mut acc = vec![0.0f64; first.update.num_values()];
    for (r, &w) in results.iter().zip(weights) {
        first.update.check_same_layout(&r.update)?;
        for (a, v) in acc.iter_mut().zip(r.update.values()) {
            *a += w * f64::from(v);
        }
    }
    let mut out = first.update.clone();
    for (o, a) in out.values_mut().zip(acc) {
        *o = a as f32;
    }
    Ok(out)
}

/// Example-weighted mean of updates: weight nᵢ / Σn (FedAvg).
pub fn weighted_mean_update(results: &[ClientUpdate]) -> Result<Parameters> {
    let weights = fedavg_weights(results)?;
    combine(results, &weights)
}

/// Unweighted mean of updates (SCAFFOLD).
pub fn mean_update(results: &[ClientUpdate]) -> Result<Parameters> {
    if results.is_empty() {
        return Err(StrategyError::NoResults);
    }
    let w = vec![1.0 / results.len() as f64; results.len()];
    combine(results, &w)
}

/// The FedAvg weights nᵢ / Σn.
pub fn fedavg_weights(results: &[ClientUpdate]) -> Result<Vec<f64>> {
    if results.is_empty() {
        return Err(StrategyError::NoResults);
    }
    let total: u64 = results.iter().map(|r| r.num_examples).sum();
    if total == 0 {
        return Err(StrategyError::ZeroWeight);
    }
    Ok(results
        .iter()
        .map(|r| r.num_examples as f64 / total as f64)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tg_types::{AgentId, NamedTensor};

    fn upd(vals: Vec<f32>, n: u64) -> ClientUpdate {
        let len = vals.len();
        ClientUpdate {
            agent: AgentId::numbered(0),
            update: Parameters::new(vec![NamedTensor {
                name: "w".into(),
                shape: vec![len],
                data: vals,
            }])
            .unwrap(),
            num_examples: n,
            control_delta: None,
        }
    }

    proptest! {
        #[test]
        fn identical_updates_average_to_themselves(
            vals in proptest::collection::vec(-100f32..100.0, 1..50),
            counts in proptest::collection::vec(1u64..1000, 1..20),
        ) {
            let results: Vec<_> = counts.iter().map(|&n| upd(vals.clone(), n)).collect();
            let avg = weighted_mean_update(&results).unwrap();
            for (a, b) in avg.values().zip(&vals) {
                prop_assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0));
            }
        }

        #[test]
        fn fedavg_weights_sum_to_one(counts in proptest::collection::vec(0u64..10_000, 1..100)) {
            prop_assume!(counts.iter().sum::<u64>() > 0);
            let results: Vec<_> = counts.iter().map(|&n| upd(vec![0.0], n)).collect();
            let w = fedavg_weights(&results).unwrap();
            prop_assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            prop_assert!(w.iter().all(|&x| x >= 0.0));
        }
    }

    #[test]
    fn weights_follow_example_counts() {
        let avg = weighted_mean_update(&[upd(vec![0.0], 1), upd(vec![4.0], 3)]).unwrap();
        assert_eq!(avg.values().next(), Some(3.0));
        assert!(matches!(
            weighted_mean_update(&[]),
            Err(StrategyError::NoResults)
        ));
        assert!(matches!(
            weighted_mean_update(&[upd(vec![1.0], 0)]),
            Err(StrategyError::ZeroWeight)
        ));
    }
}
