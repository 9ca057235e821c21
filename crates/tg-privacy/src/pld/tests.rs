//! PLD unit tests: analytic Gaussian curves, composition, pmf sanity.
use super::*;

fn gaussian_delta(s: f64, eps: f64) -> f64 {
    // Exact δ(ε) of the Gaussian mechanism with sensitivity 1 (Balle & Wang 2018).
    norm_cdf(-eps * s + 1.0 / (2.0 * s)) - eps.exp() * norm_cdf(-eps * s - 1.0 / (2.0 * s))
}

#[test]
fn one_gaussian_step_matches_the_analytic_curve() {
    let s = 1.0;
    let d = Delta::new(1e-5).unwrap();
    let eps = epsilon(
        &[(
            SamplingRate::new(1.0).unwrap(),
            NoiseMultiplier::new(s).unwrap(),
            1,
        )],
        d,
        1e-4,
    );
    // The analytic δ at our ε is at most 1e-5 (we never under-state), and close to it.
    let at = gaussian_delta(s, eps);
    assert!(at <= 1e-5 * (1.0 + 1e-6), "δ({eps}) = {at}");
    assert!(gaussian_delta(s, eps - 1e-3) > 1e-5, "ε {eps} is loose");
}

#[test]
fn composing_gaussians_is_a_gaussian_with_smaller_sigma() {
    // T Gaussian steps of σ equal one step of σ/√T.
    let one = |s: f64, t: u64| {
        epsilon(
            &[(
                SamplingRate::new(1.0).unwrap(),
                NoiseMultiplier::new(s).unwrap(),
                t,
            )],
            Delta::new(1e-6).unwrap(),
            1e-4,
        )
    };
    let (a, b) = (one(4.0, 16), one(1.0, 1));
    assert!((a - b).abs() < 2e-3, "{a} vs {b}");
}

#[test]
fn square_and_multiply_matches_polar_power() {
    let z = Complex::from_polar(0.999_99, 0.001);
    for t in [0u64, 1, 2, 7, 14_062, 100_000] {
        let want = Complex::from_polar(0.999_99f64.powf(t as f64), 0.001 * t as f64);
        // ~17 squarings: phase roundoff grows to ~1e-11 at t = 1e5.
        assert!((pow_u64(z, t) - want).norm() < 1e-9, "t={t}");
    }
}

#[test]
fn step_pmf_is_a_probability_distribution() {
    for dir in [Direction::Remove, Direction::Add] {
        let p = Pld::step(dir, 0.01, 1.0, 1e-4);
        let total: f64 = p.pmf.iter().sum::<f64>() + p.inf;
        assert!((total - 1.0).abs() < 1e-9, "{dir:?}: {total}");
        // Second differences of δ at step h amplify roundoff by ~1/h²;
        // what remains is ~1e-8, far below any loss that can raise δ(ε ≥ 0).
        let negative: f64 = p.pmf.iter().filter(|&&m| m < 0.0).sum();
        assert!(negative > -1e-7, "{dir:?}: roundoff only, got {negative}");
    }
}
