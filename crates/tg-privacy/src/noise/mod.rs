//! Noise from a CSPRNG, by exact integer samplers.
//!
//! Design decision: every sample comes from Bernoulli trials with rational
//! probabilities decided by comparing uniform integers — Canonne, Kamath &
//! Steinke (2020) — so no floating-point value ever shapes the noise (the
//! attack of Mironov 2012 on textbook floating-point Laplace does not apply).
//! Randomness is ChaCha20 seeded from the operating system ([`NoiseRng`]);
//! the only other constructor is explicitly for reproducible tests.
//!
//! - [`NoiseRng::discrete_gaussian`]: exact 𝒩_ℤ(0, σ²) with σ² a rational
//!   rounded *up* from the request (never less noise than asked);
//! - [`NoiseRng::gaussian`]: N(0, σ²) as γ·𝒩_ℤ(0, (σ/γ)²) on the grid
//!   γ = σ/2²⁰ — within one part in a million of continuous, with exact
//!   sampling;
//! - [`NoiseRng::discrete_laplace`]: exact, P(y) ∝ e^{−|y|/t};
//! - [`NoiseRng::skellam`]: Poisson(μ/2) − Poisson(μ/2), integer-valued
//!   (see `poisson.rs` for where it is exact).

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::PrivacyError;

mod lattice;
mod poisson;

pub use lattice::LatticeGaussian;

/// Denominator of the rational σ² for the discrete Gaussian (σ² < 10⁶).
const SIGMA2_DENOMINATOR: u128 = 1_000_000;

/// Grid points per σ for the continuous Gaussian.
const GAUSSIAN_GRID: f64 = (1u64 << 20) as f64;

/// A cryptographically secure source of DP noise.
pub struct NoiseRng(ChaCha20Rng);

impl NoiseRng {
    /// Seeded from the operating system's CSPRNG.
    pub fn from_os() -> Result<Self, PrivacyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| PrivacyError::Rng(e.to_string()))?;
        Ok(Self(ChaCha20Rng::from_seed(seed)))
    }

    /// SIMULATION: noise drawn from a public seed, so that a simulated run
    /// reproduces bit for bit. Anyone who knows the seed can subtract the
    /// noise: it protects nothing. Only runs labelled simulated, which
    /// production policy refuses, may use it.
    pub fn simulated(seed: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..].copy_from_slice(b"tensorguard simulation\0\0");
        Self(ChaCha20Rng::from_seed(key))
    }

    /// A fixed seed, for reproducible tests and benchmarks only: noise from a
    /// known seed protects nothing.
    #[doc(hidden)]
    pub fn insecure_seeded_for_tests(seed: u64) -> Self {
        Self(ChaCha20Rng::seed_from_u64(seed))
    }

    /// Uniform integer in [0, n), n ≥ 1, by rejection (no modulo bias).
    pub(crate) fn below(&mut self, n: u128) -> u128 {
        if n <= 1 {
            return 0;
        }
        let bits = 128 - (n - 1).leading_zeros();
        if bits <= 64 {
            // One word of randomness suffices (the common case).
            let n64 = n as u64;
            loop {
                let x = self.0.next_u64() >> (64 - bits);
                if x < n64 {
                    return u128::from(x);
                }
            }
        }
        loop {
            let x = (u128::from(self.0.next_u64()) << 64 | u128::from(self.0.next_u64()))
                >> (128 - bits);
            if x < n {
                return x;
            }
        }
    }

    /// Uniform in [0, 1) on the 2⁻⁵³ grid.
    pub(crate) fn uniform_f64(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Bernoulli(num/den), 0 ≤ num ≤ den, den ≥ 1.
    pub(crate) fn bernoulli(&mut self, num: u128, den: u128) -> bool {
        self.below(den) < num
    }

    /// Bernoulli(e^{−num/den}) for num/den ∈ [0, 1].
    fn bernoulli_exp_unit(&mut self, num: u128, den: u128) -> bool {
        let mut k: u128 = 1;
        while self.bernoulli(num, den.saturating_mul(k)) {
            k += 1;
        }
        k % 2 == 1
    }

    /// Bernoulli(e^{−num/den}) for any num/den ≥ 0.
    fn bernoulli_exp(&mut self, mut num: u128, den: u128) -> bool {
        while num > den {
            if !self.bernoulli_exp_unit(1, 1) {
                return false;
            }
            num -= den;
        }
        self.bernoulli_exp_unit(num, den)
    }

    /// Discrete Laplace with P(y) ∝ e^{−|y|/t}, integer t ≥ 1.
    pub fn discrete_laplace(&mut self, t: u64) -> i64 {
        let t = u128::from(t.max(1));
        loop {
            let u = self.below(t);
            if !self.bernoulli_exp(u, t) {
                continue;
            }
            let mut v: u128 = 0;
            while self.bernoulli_exp_unit(1, 1) {
                v += 1;
            }
            let y = u + t * v;
            let negative = self.bernoulli(1, 2);
            if negative && y == 0 {
                continue;
            }
            let y = i64::try_from(y).unwrap_or(i64::MAX);
            return if negative { -y } else { y };
        }
    }

    /// Exact discrete Gaussian 𝒩_ℤ(0, σ²) with σ² = num/den.
    pub(crate) fn discrete_gaussian_rational(&mut self, num: u128, den: u128) -> i64 {
        // t = ⌊σ⌋ + 1 (CKS Algorithm 3).
        let t = ((num as f64 / den as f64).sqrt().floor() as u128 + 1).max(1);
        loop {
            let y = self.discrete_laplace(t as u64);
            let a = u128::from(y.unsigned_abs());
            // Accept with e^{−(|y| − σ²/t)² / (2σ²)} = e^{−(|y|·t·den − num)² / (2·num·den·t²)}.
            let diff = (a * t * den).abs_diff(num);
            let (Some(n2), Some(d2)) = (diff.checked_mul(diff), (2 * num * den).checked_mul(t * t))
            else {
                continue; // only far in the tail, where acceptance is ~0
            };
            if self.bernoulli_exp(n2, d2) {
                return y;
            }
        }
    }

    /// True with probability `p` (clamped to [0, 1]), decided on 2⁻⁵³ steps:
    /// for Poisson sampling, where the probability is public and only the
    /// draw must be unpredictable.
    pub fn bernoulli_rate(&mut self, p: f64) -> bool {
        let threshold = (p.clamp(0.0, 1.0) * (1u64 << 53) as f64) as u64;
        (self.0.next_u64() >> 11) < threshold
    }

    /// Exact discrete Gaussian with variance parameter at least `sigma²`:
    /// σ² is rounded up to a multiple of 10⁻⁶ (σ² < 10⁶) or to an integer.
    ///
    /// σ so large that the exact acceptance test would overflow 128-bit
    /// arithmetic (σ ≳ 3.6·10⁹; the sampler would otherwise reject forever)
    /// is refused with an error.
    pub fn discrete_gaussian(&mut self, sigma: f64) -> Result<i64, PrivacyError> {
        let (num, den) = rational_sigma2(sigma)?;
        if !exact_arithmetic_fits(num, den) {
            return Err(PrivacyError::OutOfRange {
                what: "discrete Gaussian σ (exact sampling overflows 128-bit arithmetic)",
                value: sigma,
                range: "(0, 3.6·10⁹)",
            });
        }
        Ok(self.discrete_gaussian_rational(num, den))
    }

    /// A Gaussian N(0, σ²) sample as γ·𝒩_ℤ(0, 2⁴⁰), γ = σ/2²⁰. To add noise
    /// to *data*, use [`Self::add_lattice_gaussian`], which also puts the
    /// data on the noise's lattice so the sum reveals nothing extra.
    pub fn gaussian(&mut self, sigma: f64) -> Result<f64, PrivacyError> {
        if !(sigma > 0.0 && sigma.is_finite()) {
            return Err(PrivacyError::OutOfRange {
                what: "noise standard deviation",
                value: sigma,
                range: "(0, ∞)",
            });
        }
        let g = GAUSSIAN_GRID as u128;
        Ok(self.discrete_gaussian_rational(g * g, 1) as f64 * (sigma / GAUSSIAN_GRID))
    }
}

/// Whether the acceptance test of `discrete_gaussian_rational` fits u128 for
/// every candidate within 12σ (beyond, acceptance is below e⁻⁷² anyway).
fn exact_arithmetic_fits(num: u128, den: u128) -> bool {
    let sigma = (num as f64 / den as f64).sqrt();
    let t = sigma.floor() as u128 + 1;
    let far = (12.0 * sigma).ceil() as u128 + 1;
    let d2 = (2 * num)
        .checked_mul(den)
        .and_then(|x| x.checked_mul(t))
        .and_then(|x| x.checked_mul(t));
    let diff = far
        .checked_mul(t)
        .and_then(|x| x.checked_mul(den))
        .and_then(|x| x.checked_add(num));
    d2.is_some() && diff.and_then(|d| d.checked_mul(d)).is_some()
}

/// σ² as a rational num/den, rounded up.
pub(crate) fn rational_sigma2(sigma: f64) -> Result<(u128, u128), PrivacyError> {
    let s2 = sigma * sigma;
    if !(sigma > 0.0 && s2.is_finite() && s2 < 1e24) {
        return Err(PrivacyError::OutOfRange {
            what: "noise standard deviation",
            value: sigma,
            range: "(0, 10¹²)",
        });
    }
    Ok(if s2 < 1e6 {
        (
            (s2 * SIGMA2_DENOMINATOR as f64).ceil() as u128,
            SIGMA2_DENOMINATOR,
        )
    } else {
        (s2.ceil() as u128, 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_sigma_is_an_error_not_an_endless_loop() {
        let mut rng = NoiseRng::from_os().unwrap();
        assert!(rng.discrete_gaussian(4e9).is_err());
        assert!(rng.discrete_gaussian(1e11).is_err());
        assert!(rng.discrete_gaussian(1e8).is_ok());
        assert!(rng.discrete_gaussian(2.5).is_ok());
    }

    /// Exact pmf of 𝒩_ℤ(0, σ²) on [−r, r] (normalised over a wide support).
    fn dg_pmf(sigma: f64, r: i64) -> Vec<f64> {
        let w = |y: i64| (-(y as f64).powi(2) / (2.0 * sigma * sigma)).exp();
        let wide = (40.0 * sigma) as i64 + 40;
        let z: f64 = (-wide..=wide).map(w).sum();
        (-r..=r).map(|y| w(y) / z).collect()
    }

    #[test]
    fn discrete_gaussian_fits_its_pmf() {
        for sigma in [0.5f64, 1.0, 3.0, 10.0] {
            let mut rng = NoiseRng::insecure_seeded_for_tests(sigma.to_bits());
            let n = 200_000;
            let r = (4.0 * sigma).ceil() as i64;
            let mut counts = vec![0u64; (2 * r + 1) as usize];
            let mut tail = 0u64;
            for _ in 0..n {
                let y = rng.discrete_gaussian(sigma).unwrap();
                if y.abs() <= r {
                    counts[(y + r) as usize] += 1
                } else {
                    tail += 1
                }
            }
            let pmf = dg_pmf(sigma, r);
            let p_tail = 1.0 - pmf.iter().sum::<f64>();
            // Pearson χ² over the bins with expected count ≥ 5, plus the tail.
            let mut chi2 = 0.0;
            let mut dof = 0;
            for (c, p) in counts.iter().zip(&pmf) {
                let e = p * n as f64;
                if e >= 5.0 {
                    chi2 += (*c as f64 - e).powi(2) / e;
                    dof += 1;
                }
            }
            if p_tail * n as f64 >= 5.0 {
                chi2 += (tail as f64 - p_tail * n as f64).powi(2) / (p_tail * n as f64);
                dof += 1;
            }
            // χ² with k dof has mean k and sd √(2k): 6 sd is a ~1e-9 false alarm.
            let k = f64::from(dof - 1);
            assert!(
                chi2 < k + 6.0 * (2.0 * k).sqrt(),
                "σ={sigma}: χ²={chi2:.1} with {k} dof"
            );
        }
    }

    #[test]
    fn gaussian_moments() {
        let mut rng = NoiseRng::insecure_seeded_for_tests(7);
        let n = 100_000;
        let sigma = 2.5;
        let xs: Vec<f64> = (0..n).map(|_| rng.gaussian(sigma).unwrap()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        let kurt = xs.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / n as f64 / (var * var);
        assert!(mean.abs() < 5.0 * sigma / (n as f64).sqrt(), "mean {mean}");
        assert!((var / (sigma * sigma) - 1.0).abs() < 0.03, "var {var}");
        assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
    }

    #[test]
    fn gaussian_fits_the_normal_cdf() {
        // χ² over 32 equal-width bins of the standardised value in [−4, 4] plus two tails.
        let phi = |z: f64| 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
        for sigma in [0.5f64, 2.5, 100.0, 1e-3] {
            let mut rng = NoiseRng::insecure_seeded_for_tests(sigma.to_bits() ^ 1);
            let n = 100_000usize;
            let mut counts = [0usize; 34];
            for _ in 0..n {
                let z = rng.gaussian(sigma).unwrap() / sigma;
                let bin = if z < -4.0 {
                    0
                } else if z >= 4.0 {
                    33
                } else {
                    1 + ((z + 4.0) / 0.25) as usize
                };
                counts[bin] += 1;
            }
            let edges: Vec<f64> = (0..=32).map(|i| -4.0 + 0.25 * i as f64).collect();
            let mut chi2 = 0.0;
            for (bin, &c) in counts.iter().enumerate() {
                let p = match bin {
                    0 => phi(-4.0),
                    33 => 1.0 - phi(4.0),
                    b => phi(edges[b]) - phi(edges[b - 1]),
                };
                let e = p * n as f64;
                chi2 += (c as f64 - e).powi(2) / e;
            }
            let k = 33.0f64;
            assert!(chi2 < k + 6.0 * (2.0 * k).sqrt(), "σ={sigma}: χ²={chi2:.1}");
        }
    }

    #[test]
    fn discrete_laplace_mean_abs() {
        // E|Y| for P(y) ∝ e^{−|y|/t}: 2e^{−1/t} / (1 − e^{−2/t}).
        let t = 4u64;
        let mut rng = NoiseRng::insecure_seeded_for_tests(3);
        let n = 100_000;
        let m = (0..n)
            .map(|_| rng.discrete_laplace(t).unsigned_abs() as f64)
            .sum::<f64>()
            / n as f64;
        let a = (-1.0 / t as f64).exp();
        let want = 2.0 * a / (1.0 - a * a);
        assert!((m - want).abs() < 0.05, "{m} vs {want}");
    }

    #[test]
    fn sigma_is_rounded_up_and_bad_sigma_refused() {
        let (n, d) = rational_sigma2(1.1).unwrap();
        assert!(n as f64 / d as f64 >= 1.21);
        assert!(rational_sigma2(0.0).is_err());
        assert!(rational_sigma2(f64::NAN).is_err());
        assert!(
            NoiseRng::insecure_seeded_for_tests(1)
                .gaussian(-1.0)
                .is_err()
        );
    }
}
