//! One entry point for "what is ε after these steps?", whichever accountant
//! the job chose.
//!
//! Design decision: a job's history is a list of [`GaussianSteps`] (the
//! ledger stores exactly these), and ε is always recomputed from the whole
//! list rather than updated incrementally, so the number reported after a
//! restart is the number the same list gives in Opacus or dp-accounting.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Delta, NoiseMultiplier, RdpAccountant, SamplingRate};

/// Which accountant turns a history of steps into ε.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AccountantKind {
    /// Rényi DP (Mironov 2017; Opacus' `RDPAccountant`).
    #[default]
    Rdp,
    /// Privacy loss distributions (dp-accounting's `PLDAccountant`); tighter.
    Pld,
    /// Skellam RDP ([`crate::skellam`]): integer noise under secure
    /// aggregation. It needs the release's sensitivities and scale, so
    /// [`epsilon`] (Gaussian steps) answers ∞ for it — never an under-count.
    Skellam,
}

impl AccountantKind {
    /// Stable lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Rdp => "rdp",
            Self::Pld => "pld",
            Self::Skellam => "skellam",
        }
    }
}

impl fmt::Display for AccountantKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccountantKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rdp" => Ok(Self::Rdp),
            "pld" => Ok(Self::Pld),
            "skellam" => Ok(Self::Skellam),
            other => Err(format!(
                "unknown accountant `{other}` (expected rdp or pld)"
            )),
        }
    }
}

/// `steps` applications of the Poisson-subsampled Gaussian mechanism with
/// sampling rate `sampling_rate` and noise multiplier `noise_multiplier`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaussianSteps {
    /// Poisson sampling probability q.
    pub sampling_rate: SamplingRate,
    /// Noise standard deviation divided by the L2 sensitivity.
    pub noise_multiplier: NoiseMultiplier,
    /// How many times the mechanism ran.
    pub steps: u64,
}

/// ε of a history, and the RDP order that achieved it (RDP only).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpsilonReport {
    /// ε at the requested δ.
    pub epsilon: f64,
    /// The optimal Rényi order (None for PLD).
    pub optimal_order: Option<f64>,
}

/// ε at `delta` after every part of `history`, by `kind`. An empty history is ε = 0.
pub fn epsilon(kind: AccountantKind, history: &[GaussianSteps], delta: Delta) -> EpsilonReport {
    if history.iter().all(|s| s.steps == 0) {
        return EpsilonReport {
            epsilon: 0.0,
            optimal_order: None,
        };
    }
    match kind {
        AccountantKind::Rdp => {
            let mut acc = RdpAccountant::default();
            for s in history {
                acc.compose(s.sampling_rate, s.noise_multiplier, s.steps);
            }
            let (epsilon, order) = acc.epsilon(delta);
            EpsilonReport {
                epsilon,
                optimal_order: Some(order),
            }
        }
        AccountantKind::Skellam => EpsilonReport {
            epsilon: f64::INFINITY,
            optimal_order: None,
        },
        AccountantKind::Pld => {
            let parts: Vec<_> = merge_runs(history)
                .into_iter()
                .map(|s| (s.sampling_rate, s.noise_multiplier, s.steps))
                .collect();
            EpsilonReport {
                epsilon: crate::pld::epsilon(&parts, delta, crate::pld::DEFAULT_INTERVAL),
                optimal_order: None,
            }
        }
    }
}

/// Merges parts with the same (q, σ): composition is commutative, and one
/// self-composition of `a + b` steps is far cheaper than two.
fn merge_runs(history: &[GaussianSteps]) -> Vec<GaussianSteps> {
    let mut merged: Vec<GaussianSteps> = Vec::new();
    for s in history.iter().filter(|s| s.steps > 0) {
        match merged.iter_mut().find(|m| {
            m.sampling_rate == s.sampling_rate && m.noise_multiplier == s.noise_multiplier
        }) {
            Some(m) => m.steps += s.steps,
            None => merged.push(*s),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(q: f64, s: f64, t: u64) -> GaussianSteps {
        GaussianSteps {
            sampling_rate: SamplingRate::new(q).unwrap(),
            noise_multiplier: NoiseMultiplier::new(s).unwrap(),
            steps: t,
        }
    }

    #[test]
    fn empty_history_spends_nothing() {
        let d = Delta::new(1e-5).unwrap();
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            assert_eq!(epsilon(kind, &[], d).epsilon, 0.0);
            assert_eq!(epsilon(kind, &[steps(0.1, 1.0, 0)], d).epsilon, 0.0);
        }
    }

    #[test]
    fn split_history_equals_merged_history() {
        let d = Delta::new(1e-5).unwrap();
        for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
            let whole = epsilon(kind, &[steps(0.05, 1.2, 30)], d).epsilon;
            let split = epsilon(
                kind,
                &[
                    steps(0.05, 1.2, 10),
                    steps(0.05, 1.2, 15),
                    steps(0.05, 1.2, 5),
                ],
                d,
            )
            .epsilon;
            assert!(
                (whole - split).abs() <= 1e-9 * whole,
                "{kind}: {whole} vs {split}"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        for kind in [
            AccountantKind::Rdp,
            AccountantKind::Pld,
            AccountantKind::Skellam,
        ] {
            assert_eq!(kind.as_str().parse::<AccountantKind>().unwrap(), kind);
        }
        assert!("moments".parse::<AccountantKind>().is_err());
    }
}
