//! Splitting a training set among clients.
//!
//! Every partitioner returns, for each client, the indices of its examples;
//! every example is placed exactly once, and the result depends only on the
//! labels, the spec, the client count and the seed.

use rand::Rng;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use tg_types::spec::PartitionSpec;

use crate::{ModelError, Result};

/// Dirichlet draws are repeated (up to this many times) until every client
/// holds at least [`min_dirichlet_size`] examples, as Flower's
/// `DirichletPartitioner` does.
const DIRICHLET_RETRIES: usize = 100;

fn min_dirichlet_size(n: usize, clients: usize) -> usize {
    (n / (4 * clients)).clamp(1, 10)
}

/// Splits `labels.len()` examples among `clients`.
pub fn partition(
    labels: &[u32],
    clients: usize,
    spec: PartitionSpec,
    seed: u64,
) -> Result<Vec<Vec<usize>>> {
    let n = labels.len();
    if clients == 0 {
        return Err(ModelError::Unsuitable(
            "cannot partition among 0 clients".into(),
        ));
    }
    if n < clients {
        return Err(ModelError::Unsuitable(format!(
            "{n} training examples cannot be split among {clients} clients (each needs at least one)"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9a27_1710);
    match spec {
        PartitionSpec::Iid => Ok(iid(n, clients, &mut rng)),
        PartitionSpec::Dirichlet(alpha) => dirichlet(labels, clients, alpha, &mut rng),
        PartitionSpec::Shards(k) => shards(labels, clients, k, &mut rng),
        other => Err(ModelError::Unsuitable(format!(
            "partition `{other}` is not supported by this build"
        ))),
    }
}

fn iid(n: usize, clients: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng);
    let mut out = vec![Vec::new(); clients];
    for (i, e) in idx.into_iter().enumerate() {
        out[i % clients].push(e);
    }
    out
}

fn by_class(labels: &[u32]) -> Vec<Vec<usize>> {
    let k = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut classes = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        classes[l as usize].push(i);
    }
    classes
}

fn dirichlet(
    labels: &[u32],
    clients: usize,
    alpha: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>> {
    let gamma = Gamma::new(alpha, 1.0)
        .map_err(|e| ModelError::Unsuitable(format!("Dirichlet α = {alpha}: {e}")))?;
    let min_size = min_dirichlet_size(labels.len(), clients);
    let mut classes = by_class(labels);
    let mut best: Option<Vec<Vec<usize>>> = None;
    for _ in 0..DIRICHLET_RETRIES {
        let mut out = vec![Vec::new(); clients];
        for members in &mut classes {
            members.shuffle(rng);
            let mut w: Vec<f64> = (0..clients).map(|_| gamma.sample(rng)).collect();
            let total: f64 = w.iter().sum();
            if total <= 0.0 || !total.is_finite() {
                // All draws underflowed (tiny α): give the class to one client.
                w = vec![0.0; clients];
                w[rng.random_range(0..clients)] = 1.0;
            }
            let total: f64 = w.iter().sum();
            // Cut points from cumulative proportions; the last cut is the end.
            let mut start = 0;
            let mut acc = 0.0;
            for (c, wc) in w.iter().enumerate() {
                acc += wc / total;
                let end = if c + 1 == clients {
                    members.len()
                } else {
                    ((acc * members.len() as f64).round() as usize).clamp(start, members.len())
                };
                out[c].extend_from_slice(&members[start..end]);
                start = end;
            }
        }
        let smallest = out.iter().map(Vec::len).min().unwrap_or(0);
        if smallest >= min_size {
            return Ok(out);
        }
        let better = best
            .as_ref()
            .is_none_or(|b| b.iter().map(Vec::len).min().unwrap_or(0) < smallest);
        if better {
            best = Some(out);
        }
    }
    // Accept the most balanced draw, but never leave a client empty.
    let mut out = best.unwrap_or_else(|| vec![Vec::new(); clients]);
    rebalance_empty(&mut out);
    Ok(out)
}

/// Moves one example from the largest client into each empty one.
fn rebalance_empty(out: &mut [Vec<usize>]) {
    while let Some(empty) = out.iter().position(Vec::is_empty) {
        let Some(largest) = (0..out.len()).max_by_key(|&i| out[i].len()) else {
            return;
        };
        if out[largest].len() < 2 {
            return;
        }
        if let Some(e) = out[largest].pop() {
            out[empty].push(e);
        }
    }
}

fn shards(
    labels: &[u32],
    clients: usize,
    per_client: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>> {
    let n = labels.len();
    let total = clients * per_client;
    if total > n {
        return Err(ModelError::Unsuitable(format!(
            "{clients} clients × {per_client} shards = {total} shards, more than the {n} examples"
        )));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(rng); // random order within a label
    idx.sort_by_key(|&i| labels[i]);
    let mut order: Vec<usize> = (0..total).collect();
    order.shuffle(rng);
    let mut out = vec![Vec::new(); clients];
    for (slot, &shard) in order.iter().enumerate() {
        let (start, end) = (shard * n / total, (shard + 1) * n / total);
        out[slot / per_client].extend_from_slice(&idx[start..end]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(n: usize, k: u32) -> Vec<u32> {
        (0..n).map(|i| (i as u32 * 7 + i as u32 / 3) % k).collect()
    }

    fn assert_exact_cover(parts: &[Vec<usize>], n: usize) {
        let mut seen = vec![0u8; n];
        for p in parts {
            for &i in p {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "not an exact cover");
    }

    proptest! {
        #[test]
        fn every_sample_exactly_once(
            n in 20usize..600,
            clients in 1usize..20,
            k in 2u32..12,
            which in 0usize..3,
            alpha in 0.01f64..5.0,
            seed in any::<u64>(),
        ) {
            prop_assume!(n >= clients * 2);
            let spec = match which {
                0 => PartitionSpec::Iid,
                1 => PartitionSpec::Dirichlet(alpha),
                _ => PartitionSpec::Shards(2),
            };
            let l = labels(n, k);
            let parts = partition(&l, clients, spec, seed).unwrap();
            prop_assert_eq!(parts.len(), clients);
            assert_exact_cover(&parts, n);
            prop_assert!(parts.iter().all(|p| !p.is_empty()));
        }
    }

    #[test]
    fn deterministic_under_seed() {
        let l = labels(500, 10);
        let a = partition(&l, 10, PartitionSpec::Dirichlet(0.5), 1).unwrap();
        let b = partition(&l, 10, PartitionSpec::Dirichlet(0.5), 1).unwrap();
        let c = partition(&l, 10, PartitionSpec::Dirichlet(0.5), 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn dirichlet_small_alpha_is_skewed() {
        let l = labels(1000, 10);
        let parts = partition(&l, 10, PartitionSpec::Dirichlet(0.1), 3).unwrap();
        let classes_per_client: Vec<usize> = parts
            .iter()
            .map(|p| {
                let mut seen = [false; 10];
                p.iter().for_each(|&i| seen[l[i] as usize] = true);
                seen.iter().filter(|&&s| s).count()
            })
            .collect();
        assert!(
            classes_per_client.iter().sum::<usize>() < 70,
            "{classes_per_client:?}"
        );
    }

    #[test]
    fn errors_are_clear() {
        assert!(partition(&[0, 1], 0, PartitionSpec::Iid, 0).is_err());
        assert!(partition(&[0, 1], 3, PartitionSpec::Iid, 0).is_err());
        assert!(partition(&[0, 1, 0, 1], 2, PartitionSpec::Shards(3), 0).is_err());
    }
}
