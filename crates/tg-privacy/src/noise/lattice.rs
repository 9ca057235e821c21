//! Gaussian noise added to real-valued data without a floating-point leak.
//!
//! Design decision: adding a sample γ·Z (Z an integer) to an arbitrary
//! float x would publish x modulo γ in the output's low bits — the
//! floating-point channel of Mironov (2012). So the data is first rounded to
//! the same lattice γℤ, with γ a power of two so that every γ·k is an exact
//! double: the release is exactly γ·(round(x/γ) + Z), Z ~ 𝒩_ℤ(0, (σ/γ)²),
//! which depends on x only through its rounded value. Rounding moves each
//! coordinate by at most γ/2, so the rounded vectors' L2 sensitivity is at
//! most Δ₂ + γ√d; [`LatticeGaussian::calibrated`] raises σ by exactly that
//! much, so the noise multiplier the accountant uses still holds.

use super::NoiseRng;
use crate::PrivacyError;

/// Lattice points per σ (at least): the grid is ~10⁻⁶ σ fine.
const POINTS_PER_SIGMA: f64 = (1u64 << 20) as f64;

/// Noise of standard deviation `sigma` on the lattice `gamma`·ℤ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatticeGaussian {
    gamma: f64,
    sigma: f64,
}

/// Largest power of two ≤ x (x > 0, finite).
fn pow2_floor(x: f64) -> f64 {
    2f64.powi(x.log2().floor() as i32)
}

impl LatticeGaussian {
    /// Noise for a d-dimensional sum of L2 sensitivity `sensitivity` that
    /// meets noise multiplier `noise_multiplier` *after* lattice rounding:
    /// σ = z·(Δ₂ + γ√d).
    pub fn calibrated(
        noise_multiplier: f64,
        sensitivity: f64,
        dimension: usize,
    ) -> Result<Self, PrivacyError> {
        let base = noise_multiplier * sensitivity;
        if !(base > 0.0 && base.is_finite()) {
            return Err(PrivacyError::OutOfRange {
                what: "noise standard deviation",
                value: base,
                range: "(0, ∞)",
            });
        }
        let gamma = pow2_floor(base / POINTS_PER_SIGMA);
        let sigma = noise_multiplier * (sensitivity + gamma * (dimension as f64).sqrt());
        Ok(Self { gamma, sigma })
    }

    /// Noise of standard deviation σ for data already on the integers
    /// (counts): the lattice step is a power of two ≤ 1, so integers stay put.
    pub fn for_integers(sigma: f64) -> Result<Self, PrivacyError> {
        if !(sigma > 0.0 && sigma.is_finite()) {
            return Err(PrivacyError::OutOfRange {
                what: "noise standard deviation",
                value: sigma,
                range: "(0, ∞)",
            });
        }
        Ok(Self {
            gamma: pow2_floor(sigma / POINTS_PER_SIGMA).min(1.0),
            sigma,
        })
    }

    /// The noise standard deviation actually applied.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The lattice step γ.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }
}

impl NoiseRng {
    /// Replaces each value x by γ·(round(x/γ) + Z), Z ~ 𝒩_ℤ(0, (σ/γ)²).
    pub fn add_lattice_gaussian(
        &mut self,
        values: &mut [f64],
        noise: &LatticeGaussian,
    ) -> Result<(), PrivacyError> {
        let ratio = noise.sigma / noise.gamma;
        let (num, den) = super::rational_sigma2(ratio)?;
        for x in values.iter_mut() {
            let k = (*x / noise.gamma).round();
            if !(k.abs() < (1u64 << 52) as f64) {
                return Err(PrivacyError::OutOfRange {
                    what: "value to noise (in lattice steps)",
                    value: k,
                    range: "(−2⁵², 2⁵²)",
                });
            }
            let z = self.discrete_gaussian_rational(num, den);
            *x = noise.gamma * (k + z as f64);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_depends_only_on_the_rounded_input() {
        let lg = LatticeGaussian::calibrated(1.0, 1.0, 4).unwrap();
        let g = lg.gamma();
        assert_eq!(g, pow2_floor(g));
        // Two inputs that round to the same lattice point give identical
        // outputs under the same randomness — the low bits carry nothing.
        let mut a = vec![0.25, -3.0, 1e-9, 7.5];
        let mut b: Vec<f64> = a.iter().map(|v| v + 0.3 * g).collect();
        NoiseRng::insecure_seeded_for_tests(5)
            .add_lattice_gaussian(&mut a, &lg)
            .unwrap();
        NoiseRng::insecure_seeded_for_tests(5)
            .add_lattice_gaussian(&mut b, &lg)
            .unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (v / g).fract() == 0.0));
    }

    #[test]
    fn sigma_covers_the_rounding_and_the_moments_hold() {
        let (z, c, d) = (1.3, 2.0, 10_000);
        let lg = LatticeGaussian::calibrated(z, c, d).unwrap();
        assert!(lg.sigma() >= z * (c + lg.gamma() * (d as f64).sqrt()) * (1.0 - 1e-15));
        assert!(lg.sigma() < z * c * 1.001);
        let mut v = vec![0.0; d];
        NoiseRng::insecure_seeded_for_tests(9)
            .add_lattice_gaussian(&mut v, &lg)
            .unwrap();
        let var = v.iter().map(|x| x * x).sum::<f64>() / d as f64;
        assert!(
            (var.sqrt() / lg.sigma() - 1.0).abs() < 0.03,
            "{}",
            var.sqrt()
        );
    }

    #[test]
    fn integers_stay_on_the_lattice_and_bad_input_is_refused() {
        let lg = LatticeGaussian::for_integers(3.0).unwrap();
        assert!(lg.gamma() <= 1.0 && 1.0 % lg.gamma() == 0.0);
        assert!(LatticeGaussian::calibrated(0.0, 1.0, 3).is_err());
        assert!(LatticeGaussian::for_integers(f64::NAN).is_err());
        let mut huge = vec![1e300];
        assert!(
            NoiseRng::insecure_seeded_for_tests(0)
                .add_lattice_gaussian(&mut huge, &lg)
                .is_err()
        );
    }
}
