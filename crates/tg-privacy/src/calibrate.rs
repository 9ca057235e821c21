//! Calibration: the smallest noise multiplier that meets a target ε.
//!
//! ε is non-increasing in σ for every accountant here, so bisection on σ
//! is exact up to its tolerance; we stop at an absolute width of 1e-9 and
//! return the upper end, which always meets the target.

use crate::{Epsilon, NoiseMultiplier, PrivacyError};

/// Largest σ considered before declaring a target unreachable.
pub const MAX_NOISE_MULTIPLIER: f64 = 1.0e4;

/// Bisection width at which calibration stops.
const TOLERANCE: f64 = 1e-9;

/// Smallest σ ∈ (0, [`MAX_NOISE_MULTIPLIER`]] with `epsilon_at(σ) ≤ target`.
pub fn calibrate_noise(
    target: Epsilon,
    mut epsilon_at: impl FnMut(NoiseMultiplier) -> f64,
) -> Result<NoiseMultiplier, PrivacyError> {
    let eps = |s: f64, f: &mut dyn FnMut(NoiseMultiplier) -> f64| NoiseMultiplier::new(s).map(f);
    let goal = target.get();
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while eps(hi, &mut epsilon_at)? > goal {
        lo = hi;
        hi *= 2.0;
        if hi > MAX_NOISE_MULTIPLIER {
            return Err(PrivacyError::Unreachable {
                target_epsilon: goal,
                max_sigma: MAX_NOISE_MULTIPLIER,
                best_epsilon: eps(MAX_NOISE_MULTIPLIER, &mut epsilon_at)?,
            });
        }
    }
    while hi - lo > TOLERANCE {
        let mid = 0.5 * (lo + hi);
        if eps(mid, &mut epsilon_at)? > goal {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    NoiseMultiplier::new(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_boundary_of_a_monotone_curve() {
        let s = calibrate_noise(Epsilon::new(2.0).unwrap(), |s| 4.0 / s.get()).unwrap();
        assert!((s.get() - 2.0).abs() < 2e-9);
        assert!(4.0 / s.get() <= 2.0);
    }

    #[test]
    fn unreachable_targets_are_errors() {
        let e = calibrate_noise(Epsilon::new(0.5).unwrap(), |_| 1.0).unwrap_err();
        assert!(matches!(e, PrivacyError::Unreachable { .. }));
    }
}
