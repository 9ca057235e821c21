//! The robust rules' arithmetic on flat update vectors: coordinate-wise
//! median and trimmed mean, Krum scores, Bulyan, and median/MAD screening.
//!
//! Everything is computed in `f64` from `f32` updates, and every choice that
//! could tie (equal scores, equal distances to a median) falls to the lower
//! index; callers pass updates in canonical (agent) order, so the result does
//! not depend on arrival order.

/// Median of `v` (sorted in place); the mean of the middle two for an even
/// count. `v` must not be empty.
pub(crate) fn median_in_place(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The lower median (the ⌈n/2⌉-th smallest); 0 for no values.
pub(crate) fn lower_median(x: &[f64]) -> f64 {
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    v.get((v.len().max(1) - 1) / 2).copied().unwrap_or(0.0)
}

/// Calls `each(j, column)` with coordinate `j`'s values across `updates`.
fn columns(updates: &[&[f32]], mut each: impl FnMut(usize, &mut [f64])) {
    let d = updates.first().map_or(0, |u| u.len());
    let mut col = vec![0.0f64; updates.len()];
    for j in 0..d {
        for (c, u) in col.iter_mut().zip(updates) {
            *c = f64::from(u[j]);
        }
        each(j, &mut col);
    }
}

/// Coordinate-wise median.
pub(crate) fn coordinate_median(updates: &[&[f32]]) -> Vec<f64> {
    let mut out = vec![0.0; updates.first().map_or(0, |u| u.len())];
    columns(updates, |j, col| out[j] = median_in_place(col));
    out
}

/// Coordinate-wise mean after dropping the `cut` smallest and `cut` largest
/// values (`2·cut < n`).
pub(crate) fn trimmed_mean(updates: &[&[f32]], cut: usize) -> Vec<f64> {
    let mut out = vec![0.0; updates.first().map_or(0, |u| u.len())];
    columns(updates, |j, col| {
        col.sort_by(f64::total_cmp);
        let kept = &col[cut..col.len() - cut];
        out[j] = kept.iter().sum::<f64>() / kept.len() as f64;
    });
    out
}

/// Squared Euclidean distances between every pair.
pub(crate) fn squared_distances(updates: &[&[f32]]) -> Vec<Vec<f64>> {
    let n = updates.len();
    let mut d = vec![vec![0.0; n]; n];
    for i in 0..n {
        for k in i + 1..n {
            let s: f64 = updates[i]
                .iter()
                .zip(updates[k])
                .map(|(&a, &b)| {
                    let x = f64::from(a) - f64::from(b);
                    x * x
                })
                .sum();
            d[i][k] = s;
            d[k][i] = s;
        }
    }
    d
}

/// Krum scores over the updates indexed by `among`: each one's sum of
/// squared distances to its `max(1, m − f − 2)` nearest others (m =
/// `among.len()`).
pub(crate) fn krum_scores(dist: &[Vec<f64>], among: &[usize], f: usize) -> Vec<f64> {
    let m = among.len();
    let closest = m.saturating_sub(f + 2).max(1);
    among
        .iter()
        .map(|&i| {
            let mut row: Vec<f64> = among
                .iter()
                .filter(|&&k| k != i)
                .map(|&k| dist[i][k])
                .collect();
            row.sort_by(f64::total_cmp);
            row.iter().take(closest).sum()
        })
        .collect()
}

/// Positions (into `scores`) of the `keep` lowest scores, lowest first,
/// ties to the lower position.
pub(crate) fn lowest(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order.truncate(keep);
    order
}

/// Bulyan: `n − 2f` updates chosen one at a time by Krum over those not yet
/// chosen, then per coordinate the mean of the `n − 4f` chosen values
/// closest to their median. Returns the aggregate and the chosen indices.
pub(crate) fn bulyan(updates: &[&[f32]], f: usize) -> (Vec<f64>, Vec<usize>) {
    let n = updates.len();
    let theta = n - 2 * f;
    let beta = theta - 2 * f;
    let dist = squared_distances(updates);
    let mut left: Vec<usize> = (0..n).collect();
    let mut chosen = Vec::with_capacity(theta);
    for _ in 0..theta {
        let scores = krum_scores(&dist, &left, f);
        let best = lowest(&scores, 1)[0];
        chosen.push(left.remove(best));
    }
    let picked: Vec<&[f32]> = chosen.iter().map(|&i| updates[i]).collect();
    let mut out = vec![0.0; updates.first().map_or(0, |u| u.len())];
    let mut by_distance: Vec<(f64, usize)> = Vec::with_capacity(theta);
    columns(&picked, |j, col| {
        let mut sorted = col.to_vec();
        let med = median_in_place(&mut sorted);
        by_distance.clear();
        by_distance.extend(col.iter().enumerate().map(|(i, &v)| ((v - med).abs(), i)));
        by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        out[j] = by_distance[..beta]
            .iter()
            .map(|&(_, i)| col[i])
            .sum::<f64>()
            / beta as f64;
    });
    chosen.sort_unstable();
    (out, chosen)
}

/// One-sided robust z-scores: `(x − median) / σ̂` for values above the
/// median (0 below it: a small norm or a well-aligned update harms no
/// one), with `σ̂ = max(1.4826 · MAD, floor)`. The floor keeps a round of
/// near-identical values from calling ordinary variation an outlier.
pub(crate) fn robust_z(x: &[f64], floor: f64) -> Vec<f64> {
    if x.is_empty() {
        return Vec::new();
    }
    let mut s = x.to_vec();
    let med = median_in_place(&mut s);
    let mut dev: Vec<f64> = x.iter().map(|v| (v - med).abs()).collect();
    let mad = median_in_place(&mut dev);
    let sigma = (1.4826 * mad).max(floor).max(1e-12);
    x.iter().map(|v| (v - med).max(0.0) / sigma).collect()
}

/// The median of `x` (a copy is sorted).
pub(crate) fn median(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    median_in_place(&mut x.to_vec())
}

/// L2 norm in `f64`.
pub(crate) fn norm(u: &[f32]) -> f64 {
    u.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt()
}

/// `1 − cos(u, r)`; 1 (orthogonal) when either is zero.
pub(crate) fn cosine_distance(u: &[f32], r: &[f64]) -> f64 {
    let dot: f64 = u.iter().zip(r).map(|(&a, &b)| f64::from(a) * b).sum();
    let nr = r.iter().map(|v| v * v).sum::<f64>().sqrt();
    let nu = norm(u);
    if nu == 0.0 || nr == 0.0 {
        1.0
    } else {
        1.0 - dot / (nu * nr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let a = [1.0f32, -4.0];
        let b = [2.0f32, 0.0];
        let c = [3.0f32, 100.0];
        let d = [10.0f32, 1.0];
        let ups: Vec<&[f32]> = vec![&a, &b, &c, &d];
        assert_eq!(coordinate_median(&ups), vec![2.5, 0.5]);
        assert_eq!(trimmed_mean(&ups, 1), vec![2.5, 0.5]);
        let dist = squared_distances(&ups);
        assert_eq!(dist[0][1], 1.0 + 16.0);
        // f = 0 over 4: each score sums its 2 nearest.
        let s = krum_scores(&dist, &[0, 1, 2, 3], 0);
        assert_eq!(s[1], 17.0 + (64.0 + 1.0));
        assert_eq!(lowest(&s, 1), vec![1]);
        let z = robust_z(&[1.0, 1.1, 0.9, 1.0, 10.0], 0.1);
        assert!(z[4] > 3.0 && z[..4].iter().all(|&v| v < 3.0), "{z:?}");
        // One-sided: a tiny value is no outlier.
        assert_eq!(robust_z(&[1.0, 1.0, 1.0, 0.0], 0.1)[3], 0.0);
        assert!((cosine_distance(&[1.0, 0.0], &[-2.0, 0.0]) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn bulyan_keeps_values_near_the_median() {
        let honest: Vec<[f32; 1]> = (0..7).map(|i| [i as f32 * 0.1]).collect();
        let mut ups: Vec<&[f32]> = honest.iter().map(|h| h.as_slice()).collect();
        let bad = [1000.0f32];
        ups.push(&bad);
        // n = 8 < 4f + 3 for f = 2, but the arithmetic holds for f = 1 (n ≥ 7).
        let (agg, chosen) = bulyan(&ups, 1);
        assert!(!chosen.contains(&7), "{chosen:?}");
        assert!(agg[0] < 1.0, "{agg:?}");
    }
}
