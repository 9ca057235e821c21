//! The rollout gate: a candidate model commits only if the fleet's success
//! with it is not worse than with the current model beyond a margin.
//!
//! Design decision: the test is on success *counts* (what robots report
//! from rollouts on held-out seeds), with Newcombe's hybrid score interval
//! for a difference of two proportions (Newcombe 1998, method 10: Wilson
//! intervals for each rate, combined). It is well-behaved at 0% and 100%
//! success and at the small counts a round's evaluation yields, where the
//! Wald interval is not. The candidate is rejected when the whole 95%
//! interval of `p_candidate − p_current` lies below `−margin`: evidence
//! that it is worse by more than the margin, not mere noise.

pub use tg_types::record::{GateVerdict, Successes};

use crate::{Result, StrategyError};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Settings of the gate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RolloutGate {
    /// How much worse than the current model (a difference of success
    /// rates, in [0, 1)) a candidate may be shown to be and still commit.
    pub margin: f64,
    /// Fewest evaluation episodes per model for the gate to judge; with
    /// fewer the round fails (it cannot tell).
    pub min_episodes: u64,
}

/// The 95% Wilson score interval of `s` successes in `n` trials.
pub fn wilson(s: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p, z2) = (n as f64, s as f64 / n as f64, Z95 * Z95);
    let d = 1.0 + z2 / n;
    let c = (p + z2 / (2.0 * n)) / d;
    let h = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / d;
    ((c - h).max(0.0), (c + h).min(1.0))
}

/// The 95% Newcombe hybrid score interval of `p₁ − p₂`.
pub fn newcombe(a: Successes, b: Successes) -> (f64, f64) {
    let (p1, p2) = (a.rate(), b.rate());
    let (l1, u1) = wilson(a.successes, a.episodes);
    let (l2, u2) = wilson(b.successes, b.episodes);
    let d = p1 - p2;
    (
        d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    )
}

impl RolloutGate {
    /// Checks the settings.
    pub fn new(margin: f64, min_episodes: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&margin) {
            return Err(StrategyError::Config(format!(
                "the rollout gate's margin is a difference of success rates in [0, 1), got {margin}"
            )));
        }
        if min_episodes == 0 {
            return Err(StrategyError::Config(
                "the rollout gate needs at least one evaluation episode per model".into(),
            ));
        }
        Ok(Self {
            margin,
            min_episodes,
        })
    }

    /// Judges a candidate against the current model; `None` when either
    /// has fewer than `min_episodes` episodes (or counts that do not add
    /// up), so the gate cannot tell.
    pub fn judge(&self, candidate: Successes, current: Successes) -> Option<GateVerdict> {
        let usable = |s: Successes| s.episodes >= self.min_episodes && s.successes <= s.episodes;
        if !usable(candidate) || !usable(current) {
            return None;
        }
        let (low, high) = newcombe(candidate, current);
        Some(GateVerdict {
            candidate,
            current,
            difference_low: low,
            difference_high: high,
            margin: self.margin,
            passed: high >= -self.margin,
            tasks: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(successes: u64, episodes: u64) -> Successes {
        Successes {
            successes,
            episodes,
        }
    }

    #[test]
    fn known_answers() {
        // Wilson 95% for 45/50 and 0/10 (standard tables).
        let (lo, hi) = wilson(45, 50);
        assert!(
            (lo - 0.7864).abs() < 1e-3 && (hi - 0.9565).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 10);
        assert!(lo == 0.0 && (hi - 0.2775).abs() < 1e-3, "{hi}");
        // Newcombe (1998), table II, example (a): 56/70 − 48/80, method 10
        // gives [0.0524, 0.3339].
        let (lo, hi) = newcombe(s(56, 70), s(48, 80));
        assert!(
            (lo - 0.0524).abs() < 1e-3 && (hi - 0.3339).abs() < 1e-3,
            "{lo} {hi}"
        );
        // (b) 9/10 − 3/10: [0.1705, 0.8090]; (d) 10/10 − 0/10: [0.6075, 1].
        let (lo, hi) = newcombe(s(9, 10), s(3, 10));
        assert!(
            (lo - 0.1705).abs() < 1e-3 && (hi - 0.8090).abs() < 1e-3,
            "{lo} {hi}"
        );
        let (lo, hi) = newcombe(s(10, 10), s(0, 10));
        assert!(
            (lo - 0.6075).abs() < 1e-3 && (hi - 1.0).abs() < 1e-3,
            "{lo} {hi}"
        );
    }

    #[test]
    fn a_poisoned_candidate_is_rejected_and_noise_is_not() {
        let gate = RolloutGate::new(0.0, 20).unwrap();
        let v = gate.judge(s(2, 40), s(30, 40)).unwrap();
        assert!(!v.passed, "{v}");
        assert!(
            v.to_string()
                .contains("candidate 2/40 (5.0%) vs current 30/40 (75.0%)")
        );
        // A few episodes worse is noise, not evidence.
        assert!(gate.judge(s(27, 40), s(30, 40)).unwrap().passed);
        // Too few episodes: the gate cannot tell.
        assert!(gate.judge(s(1, 19), s(30, 40)).is_none());
        assert!(gate.judge(s(41, 40), s(30, 40)).is_none());
        assert!(RolloutGate::new(1.0, 1).is_err() && RolloutGate::new(-0.1, 1).is_err());
        assert!(RolloutGate::new(0.1, 0).is_err());
    }

    proptest! {
        #[test]
        fn the_interval_holds_the_difference_and_a_better_candidate_always_passes(
            n1 in 1u64..400, n2 in 1u64..400, a in 0u64..400, b in 0u64..400, margin in 0.0f64..0.5
        ) {
            let (c, k) = (s(a % (n1 + 1), n1), s(b % (n2 + 1), n2));
            let (lo, hi) = newcombe(c, k);
            let d = c.rate() - k.rate();
            prop_assert!(lo <= d + 1e-12 && d <= hi + 1e-12 && lo >= -1.0 - 1e-12 && hi <= 1.0 + 1e-12);
            let gate = RolloutGate::new(margin, 1).unwrap();
            if c.rate() >= k.rate() {
                prop_assert!(gate.judge(c, k).unwrap().passed);
            }
        }
    }
}
