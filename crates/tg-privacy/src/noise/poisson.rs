//! Poisson and Skellam noise.
//!
//! Design decision: small means are sampled *exactly* with integer
//! arithmetic only; large means, where an exact sampler costs time linear in
//! the mean, use Hörmann's transformed rejection (PTRS), whose output is an
//! exact integer and whose distribution is Poisson up to the rounding of its
//! double-precision acceptance test (relative error ~1e-15 in the pmf —
//! orders of magnitude below any δ we account for). Either way no floating-
//! point value is ever *added* to data, so the low-bit attack of Mironov
//! (2012) has nothing to read.
//!
//! Exact path, for λ ≤ [`EXACT_MAX_MEAN`]: split λ into chunks λ_c ≤ 1/2 and
//! sum Poisson(λ_c) draws. Each is a rejection sampler: propose
//! G ~ Geometric(λ_c) (P(G = k) = (1 − λ_c)λ_cᵏ, from Bernoulli(λ_c) coins)
//! and accept with probability 1/G! (G − 1 Bernoulli(1/j) coins), which
//! leaves P(k) ∝ λ_cᵏ/k!; acceptance is (1 − λ_c)e^{λ_c} ≥ 0.82.

use super::NoiseRng;
use crate::PrivacyError;

/// Largest mean sampled by the exact integer algorithm.
pub const EXACT_MAX_MEAN: f64 = 16.0;

/// Denominator of the rational chunk means (rounded *up*: never less noise).
const CHUNK_DENOMINATOR: u128 = 1 << 40;

impl NoiseRng {
    /// Poisson(λ), λ ≥ 0 and finite.
    pub fn poisson(&mut self, lambda: f64) -> Result<u64, PrivacyError> {
        if !(lambda >= 0.0 && lambda.is_finite() && lambda < 1e15) {
            return Err(PrivacyError::OutOfRange {
                what: "Poisson mean",
                value: lambda,
                range: "[0, 10¹⁵)",
            });
        }
        Ok(if lambda <= EXACT_MAX_MEAN {
            self.poisson_exact(lambda)
        } else {
            self.poisson_ptrs(lambda)
        })
    }

    /// Symmetric Skellam noise with the given variance:
    /// Poisson(variance/2) − Poisson(variance/2).
    pub fn skellam(&mut self, variance: f64) -> Result<i64, PrivacyError> {
        if !(variance > 0.0 && variance.is_finite()) {
            return Err(PrivacyError::OutOfRange {
                what: "Skellam variance",
                value: variance,
                range: "(0, ∞)",
            });
        }
        let a = self.poisson(variance / 2.0)?;
        let b = self.poisson(variance / 2.0)?;
        Ok(a as i64 - b as i64)
    }

    fn poisson_exact(&mut self, lambda: f64) -> u64 {
        if lambda == 0.0 {
            return 0;
        }
        let chunks = (2.0 * lambda).ceil().max(1.0);
        let num = ((lambda / chunks) * CHUNK_DENOMINATOR as f64).ceil() as u128;
        let num = num.min(CHUNK_DENOMINATOR / 2);
        (0..chunks as u64)
            .map(|_| self.poisson_small(num, CHUNK_DENOMINATOR))
            .sum()
    }

    /// Poisson(num/den) for num/den ≤ 1/2, exactly.
    fn poisson_small(&mut self, num: u128, den: u128) -> u64 {
        loop {
            let mut g = 0u64;
            while self.bernoulli(num, den) {
                g += 1;
            }
            if (2..=g).all(|j| self.bernoulli(1, u128::from(j))) {
                return g;
            }
        }
    }

    /// Hörmann (1993), "The transformed rejection method for generating
    /// Poisson random variables", algorithm PTRS, for λ ≥ 10.
    fn poisson_ptrs(&mut self, lambda: f64) -> u64 {
        let slam = lambda.sqrt();
        let loglam = lambda.ln();
        let b = 0.931 + 2.53 * slam;
        let a = -0.059 + 0.02483 * b;
        let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
        let vr = 0.9277 - 3.6224 / (b - 2.0);
        loop {
            let u = self.uniform_f64() - 0.5;
            let v = self.uniform_f64();
            let us = 0.5 - u.abs();
            let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
            if us >= 0.07 && v <= vr {
                return k as u64;
            }
            if k < 0.0 || (us < 0.013 && v > us) {
                continue;
            }
            let lhs = v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln();
            let rhs = -lambda + k * loglam - libm::lgamma(k + 1.0);
            if lhs <= rhs {
                return k as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Poisson(λ) pmf on 0..=n, by the stable recurrence in log space.
    fn poisson_pmf(lambda: f64, n: usize) -> Vec<f64> {
        (0..=n)
            .map(|k| (-lambda + k as f64 * lambda.ln() - libm::lgamma(k as f64 + 1.0)).exp())
            .collect()
    }

    /// Skellam pmf on [−r, r] as the convolution of the two Poisson pmfs.
    fn skellam_pmf(variance: f64, r: i64) -> Vec<f64> {
        let lam = variance / 2.0;
        let n = (lam + 12.0 * lam.sqrt() + 40.0) as usize + r as usize;
        let p = poisson_pmf(lam, n);
        (-r..=r)
            .map(|k| {
                let k = k.unsigned_abs() as usize;
                (0..=n - k).map(|j| p[j + k] * p[j]).sum()
            })
            .collect()
    }

    /// Pearson χ² over bins with expected count ≥ 5 (plus the rest as one
    /// bin), against a generous critical value for the degrees of freedom.
    fn chi_square_ok(counts: &[u64], pmf: &[f64], n: u64) {
        let (mut chi2, mut dof) = (0.0, 0usize);
        let (mut rest_obs, mut rest_exp) = (n as f64, n as f64);
        for (c, p) in counts.iter().zip(pmf) {
            let e = p * n as f64;
            if e >= 5.0 {
                chi2 += (*c as f64 - e).powi(2) / e;
                dof += 1;
                rest_obs -= *c as f64;
                rest_exp -= e;
            }
        }
        if rest_exp >= 5.0 {
            chi2 += (rest_obs - rest_exp).powi(2) / rest_exp;
            dof += 1;
        }
        // Mean dof, sd √(2·dof): 6 sd is far beyond chance, well within a bug.
        let limit = dof as f64 + 6.0 * (2.0 * dof as f64).sqrt();
        assert!(chi2 < limit, "χ² = {chi2} with {dof} bins (limit {limit})");
    }

    #[test]
    fn poisson_fits_its_pmf_on_both_paths() {
        for lambda in [0.05f64, 0.5, 3.0, 16.0, 40.0, 1000.0] {
            let mut rng = NoiseRng::insecure_seeded_for_tests((lambda * 1000.0) as u64);
            let n = 100_000u64;
            let top = (lambda + 8.0 * lambda.sqrt() + 10.0) as usize;
            let mut counts = vec![0u64; top + 1];
            let (mut sum, mut sum2) = (0.0, 0.0);
            for _ in 0..n {
                let k = rng.poisson(lambda).unwrap();
                sum += k as f64;
                sum2 += (k as f64).powi(2);
                if (k as usize) <= top {
                    counts[k as usize] += 1;
                }
            }
            let mean = sum / n as f64;
            let var = sum2 / n as f64 - mean * mean;
            let se = (lambda / n as f64).sqrt();
            assert!((mean - lambda).abs() < 5.0 * se, "λ={lambda}: mean {mean}");
            assert!((var / lambda - 1.0).abs() < 0.05, "λ={lambda}: var {var}");
            chi_square_ok(&counts, &poisson_pmf(lambda, top), n);
        }
    }

    #[test]
    fn skellam_fits_its_pmf_and_moments() {
        for variance in [0.6f64, 8.0, 100.0, 5000.0] {
            let mut rng = NoiseRng::insecure_seeded_for_tests(variance as u64 + 7);
            let n = 100_000u64;
            let r = (6.0 * variance.sqrt()).ceil() as i64 + 2;
            let mut counts = vec![0u64; (2 * r + 1) as usize];
            let (mut sum, mut sum2) = (0.0, 0.0);
            for _ in 0..n {
                let y = rng.skellam(variance).unwrap();
                sum += y as f64;
                sum2 += (y as f64).powi(2);
                if y.abs() <= r {
                    counts[(y + r) as usize] += 1;
                }
            }
            let mean = sum / n as f64;
            let var = sum2 / n as f64 - mean * mean;
            assert!(
                mean.abs() < 5.0 * (variance / n as f64).sqrt(),
                "mean {mean}"
            );
            assert!(
                (var / variance - 1.0).abs() < 0.05,
                "var {var} vs {variance}"
            );
            chi_square_ok(&counts, &skellam_pmf(variance, r), n);
        }
    }

    #[test]
    fn bad_means_are_refused() {
        let mut rng = NoiseRng::insecure_seeded_for_tests(0);
        assert!(rng.poisson(-1.0).is_err());
        assert!(rng.poisson(f64::NAN).is_err());
        assert!(rng.skellam(0.0).is_err());
        assert_eq!(rng.poisson(0.0).unwrap(), 0);
    }
}
