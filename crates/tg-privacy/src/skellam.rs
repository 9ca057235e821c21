//! RDP accounting of the Skellam mechanism (Agarwal, Kairouz & Liu, "The
//! Skellam Mechanism for Differentially Private Federated Learning",
//! NeurIPS 2021), for distributed DP under secure aggregation.
//!
//! Design decision: parameters are those of the paper and of Google's
//! distributed-DP accounting — sensitivities Δ₁, Δ₂ and the *central*
//! variance μ in the unscaled domain, and the scale s that maps values to
//! integers — so a figure can be checked against either. For integer α > 1
//! (Theorem 3.5, in the scaled-back form):
//!
//! ε(α) = αΔ₂²/(2μ) + min( ((2α − 1)sΔ₂² + 6Δ₁) / (4s³μ²), 3Δ₁/(2sμ) ).
//!
//! Poisson subsampling uses the general upper bound of Wang, Balle &
//! Kasiviswanathan (2019, Theorem 9) for integer orders, taking the smaller
//! of it and the unsampled ε(α). RDP converts to (ε, δ) exactly as for the
//! Gaussian ([`crate::rdp_to_epsilon`]).

use serde::{Deserialize, Serialize};

use crate::{Delta, PrivacyError, SamplingRate, rdp_to_epsilon};

/// One Skellam release: sensitivities and central noise, unscaled domain.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkellamParams {
    l1_sensitivity: f64,
    l2_sensitivity: f64,
    variance: f64,
    scale: f64,
}

impl SkellamParams {
    /// Checks and wraps the parameters: all finite and > 0.
    pub fn new(
        l1_sensitivity: f64,
        l2_sensitivity: f64,
        variance: f64,
        scale: f64,
    ) -> Result<Self, PrivacyError> {
        for (what, v) in [
            ("Skellam L1 sensitivity", l1_sensitivity),
            ("Skellam L2 sensitivity", l2_sensitivity),
            ("Skellam central variance", variance),
            ("Skellam scale", scale),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(PrivacyError::OutOfRange {
                    what,
                    value: v,
                    range: "(0, ∞)",
                });
            }
        }
        Ok(Self {
            l1_sensitivity,
            l2_sensitivity,
            variance,
            scale,
        })
    }

    /// Parameters for a d-dimensional vector clipped to L2 norm `l2`, with
    /// Δ₁ = Δ₂·√d (the bound Google's accounting uses when Δ₁ is unknown).
    pub fn for_dimension(
        l2_sensitivity: f64,
        dimension: u64,
        variance: f64,
        scale: f64,
    ) -> Result<Self, PrivacyError> {
        if dimension == 0 {
            return Err(PrivacyError::OutOfRange {
                what: "dimension",
                value: 0.0,
                range: "[1, ∞)",
            });
        }
        Self::new(
            l2_sensitivity * (dimension as f64).sqrt(),
            l2_sensitivity,
            variance,
            scale,
        )
    }

    /// The same release after conditional randomized rounding to integers
    /// with failure probability β (Kairouz et al. 2021): the sensitivities
    /// grow to cover the rounding error of a d-dimensional input.
    pub fn with_rounding(self, dimension: u64, beta: f64) -> Result<Self, PrivacyError> {
        if !(0.0..1.0).contains(&beta) {
            return Err(PrivacyError::OutOfRange {
                what: "rounding failure probability β",
                value: beta,
                range: "[0, 1)",
            });
        }
        let d = dimension as f64;
        let s = self.scale;
        let c = self.l2_sensitivity * s; // integer-domain L2 bound
        let mut rounded = c + d.sqrt();
        if beta > 0.0 {
            let squared =
                c * c + 0.25 * d + (2.0 * (1.0 / beta).ln()).sqrt() * (c + 0.5 * d.sqrt());
            rounded = rounded.min(squared.sqrt());
        }
        let l1 = rounded * d.sqrt().min(rounded);
        Self::new(l1 / s, rounded / s, self.variance, s)
    }

    /// The same release when a neighbouring input *replaces* one record
    /// (`self` built with Δ₂ = 2C): both vectors are rounded, so the
    /// rounding error enters twice — Δ₂ grows to 2Cs + 2√d in the integer
    /// domain (β = 0: the worst case, not a high-probability bound).
    pub fn with_rounding_replace_one(self, dimension: u64) -> Result<Self, PrivacyError> {
        let d = dimension as f64;
        let s = self.scale;
        let rounded = self.l2_sensitivity * s + 2.0 * d.sqrt();
        let l1 = rounded * d.sqrt().min(rounded);
        Self::new(l1 / s, rounded / s, self.variance, s)
    }

    /// The L2 sensitivity (unscaled domain).
    pub fn l2_sensitivity(&self) -> f64 {
        self.l2_sensitivity
    }

    /// RDP ε(α) of one unsampled release, integer α ≥ 2.
    pub fn rdp(&self, alpha: u64) -> f64 {
        let a = alpha as f64;
        let (d1, d2, mu, s) = (
            self.l1_sensitivity,
            self.l2_sensitivity,
            self.variance,
            self.scale,
        );
        let gaussian = a * d2 * d2 / (2.0 * mu);
        let tight = ((2.0 * a - 1.0) * s * d2 * d2 + 6.0 * d1) / (4.0 * s.powi(3) * mu * mu);
        let loose = 3.0 * d1 / (2.0 * s * mu);
        gaussian + tight.min(loose)
    }

    /// RDP ε(α) of one release on a Poisson sample of rate q.
    pub fn subsampled_rdp(&self, q: SamplingRate, alpha: u64) -> f64 {
        let plain = self.rdp(alpha);
        let q = q.get();
        if q >= 1.0 {
            return plain;
        }
        plain.min(wang_upper_bound(alpha, q, |l| self.rdp(l)))
    }
}

/// Wang, Balle & Kasiviswanathan (2019), Theorem 9: RDP of the subsampled
/// mechanism at integer α from the unsampled RDP `eps(l)`, l = 2..α.
fn wang_upper_bound(alpha: u64, q: f64, eps: impl Fn(u64) -> f64) -> f64 {
    let a = alpha as f64;
    let ln_q = q.ln();
    let ln_1q = (-q).ln_1p();
    let ln_comb = |l: u64| {
        libm::lgamma(a + 1.0) - libm::lgamma(l as f64 + 1.0) - libm::lgamma(a - l as f64 + 1.0)
    };
    // log Σ bᵢ e^{aᵢ} with bᵢ > 0: each term as a single log value.
    let mut terms = Vec::with_capacity(alpha as usize);
    terms.push((a - 1.0) * ln_1q + (a * q - q + 1.0).ln());
    terms.push(eps(2) + ln_comb(2) + 2.0 * ln_q + (a - 2.0) * ln_1q);
    for l in 3..=alpha {
        let lf = l as f64;
        terms.push(3f64.ln() + (lf - 1.0) * eps(l) + ln_comb(l) + (a - lf) * ln_1q + lf * ln_q);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()) / (a - 1.0)
}

/// The integer orders of Google's distributed-DP accounting: 2..=128 and 256.
pub fn skellam_orders() -> Vec<u64> {
    (2..=128).chain([256]).collect()
}

/// (ε, optimal order) after `steps` releases on Poisson samples of rate q.
pub fn skellam_epsilon(
    params: &SkellamParams,
    q: SamplingRate,
    steps: u64,
    delta: Delta,
) -> (f64, f64) {
    let orders = skellam_orders();
    let rdp: Vec<f64> = orders
        .iter()
        .map(|&a| steps as f64 * params.subsampled_rdp(q, a))
        .collect();
    let orders: Vec<f64> = orders.iter().map(|&a| a as f64).collect();
    rdp_to_epsilon(&orders, &rdp, delta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NoiseMultiplier, subsampled_gaussian_rdp};

    fn q(v: f64) -> SamplingRate {
        SamplingRate::new(v).unwrap()
    }

    #[test]
    fn replacing_a_record_counts_the_rounding_of_both_vectors() {
        for (c, d, s) in [(1.0, 100u64, 50.0), (0.5, 1_000_000, 3.0), (10.0, 7, 1e4)] {
            let add = SkellamParams::for_dimension(c, d, 5.0, s)
                .unwrap()
                .with_rounding(d, 0.0)
                .unwrap();
            let replace = SkellamParams::for_dimension(2.0 * c, d, 5.0, s)
                .unwrap()
                .with_rounding_replace_one(d)
                .unwrap();
            // ‖x̃ − x̃'‖ ≤ 2(Cs + √d): twice one rounded vector's bound.
            let want = 2.0 * add.l2_sensitivity();
            assert!(
                (replace.l2_sensitivity() - want).abs() <= 1e-9 * want,
                "{c} {d} {s}"
            );
            assert!(replace.rdp(4) > add.rdp(4));
        }
    }

    #[test]
    fn approaches_the_gaussian_as_the_scale_grows() {
        // Same sensitivity and variance as a Gaussian with σ = 2: the correction
        // terms vanish like 1/s, and ε(α) is never below the Gaussian's.
        let mut last = f64::INFINITY;
        for s in [1.0, 10.0, 100.0, 1e4] {
            let p = SkellamParams::new(3.0, 1.0, 4.0, s).unwrap();
            let r = p.rdp(8);
            let g = subsampled_gaussian_rdp(q(1.0), NoiseMultiplier::new(2.0).unwrap(), 8.0);
            assert!(r >= g && r < last, "s = {s}: {r} vs gaussian {g}");
            last = r;
        }
        let g = subsampled_gaussian_rdp(q(1.0), NoiseMultiplier::new(2.0).unwrap(), 8.0);
        assert!((last / g - 1.0).abs() < 1e-3, "{last} vs {g}");
    }

    #[test]
    fn subsampling_helps_and_is_monotone_in_q() {
        let p = SkellamParams::new(10.0, 1.0, 1.0, 100.0).unwrap();
        let full = p.subsampled_rdp(q(1.0), 16);
        let half = p.subsampled_rdp(q(0.5), 16);
        let small = p.subsampled_rdp(q(0.01), 16);
        assert!(small < half && half <= full, "{small} {half} {full}");
    }

    #[test]
    fn epsilon_grows_with_steps_and_falls_with_variance() {
        let d = Delta::new(1e-5).unwrap();
        let p = |mu| SkellamParams::for_dimension(1.0, 1000, mu, 50.0).unwrap();
        let (e1, _) = skellam_epsilon(&p(1.0), q(0.1), 10, d);
        let (e2, _) = skellam_epsilon(&p(1.0), q(0.1), 100, d);
        let (e3, _) = skellam_epsilon(&p(4.0), q(0.1), 100, d);
        assert!(e1 < e2 && e3 < e2, "{e1} {e2} {e3}");
    }

    #[test]
    fn rounding_inflates_sensitivity() {
        let p = SkellamParams::for_dimension(1.0, 1000, 1.0, 100.0).unwrap();
        let r = p.with_rounding(1000, 1e-5).unwrap();
        assert!(r.l2_sensitivity > p.l2_sensitivity);
        assert!(SkellamParams::new(0.0, 1.0, 1.0, 1.0).is_err());
        assert!(p.with_rounding(10, 1.0).is_err());
    }
}
