//! Who shares masks with whom: a k-regular Harary graph, with (k, t) chosen
//! for a target security and failure probability.
//!
//! Design decision: the parameter finder follows the analysis of Bell et al.
//! (2020) as implemented in Google's `graph_parameter_finder` — the same
//! security (2⁻⁴⁰) and correctness (2⁻²⁰) targets and the same bounds — so
//! its (k, t) can be compared with published values. With k neighbours per
//! client, a client's mask secrets are Shamir-shared t-of-k among them:
//! - **security**: the server learns an honest client's secrets only if ≥ t of
//!   its neighbours are corrupt, so t must exceed (with probability
//!   1 − 2⁻⁴¹/n) the number of corrupt neighbours, a hypergeometric draw;
//! - **correctness**: recovery needs ≥ t surviving neighbours, so t must not
//!   exceed (with probability 1 − 2⁻²⁰/n) the number of surviving ones;
//! - the graph of honest survivors must stay connected (a union bound over
//!   pairs of k/2-long gaps in the ring), or the sum could split.
//!
//! When no k < n − 1 works (small n), every client neighbours every other:
//! classic SecAgg on the complete graph, with the threshold set the same way.
//!
//! Against a **malicious** server (the default, [`Threat::Malicious`]) one
//! more bound holds: the server may show different clients different
//! survivor sets, and each honest holder reveals, per owner, a share of the
//! self-mask seed *or* of the mask key. To get both secrets of one client it
//! needs `t` shares of each from two disjoint groups of honest neighbours,
//! helped by the `c` corrupt ones: `2t ≤ k + c`. So t must exceed
//! `(k + c) / 2`, with `c` the same 2⁻⁴¹/n bound on corrupt neighbours
//! (Bell et al. 2020, §5). The semi-honest threshold (just above `c`) is a
//! named, lower-security option.

use crate::SecAggError;

/// Statistical security parameter (bits).
const SECURITY_BITS: f64 = 40.0;
/// Failure probability exponent (bits).
const CORRECTNESS_BITS: f64 = 20.0;
/// Guards rounding of rate × n in the insecure direction.
const SMALL: f64 = 1e-14;

/// Which server the thresholds are chosen against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Threat {
    /// A server that deviates from the protocol in any way (drops, reorders,
    /// withholds, equivocates): `2t > k + c`. The default.
    #[default]
    Malicious,
    /// LOWER SECURITY: a server that follows the protocol but reads what it
    /// sees. Thresholds only exceed the corrupt neighbours; a deviating server
    /// can split honest clients' views and unmask an input.
    SemiHonest,
}

impl Threat {
    /// How the setting prints (the semi-honest one says it is weaker).
    pub fn label(self) -> &'static str {
        match self {
            Self::Malicious => "malicious",
            Self::SemiHonest => "semi-honest (LOWER SECURITY: an honest-but-curious server only)",
        }
    }
}

impl std::str::FromStr for Threat {
    type Err = SecAggError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "malicious" => Ok(Self::Malicious),
            "semi-honest" => Ok(Self::SemiHonest),
            other => Err(SecAggError::Params(format!(
                "threat model '{other}': expected 'malicious' or 'semi-honest'"
            ))),
        }
    }
}

/// The round's mask graph and Shamir threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GraphParams {
    /// Participants.
    pub n: usize,
    /// Neighbours per client (even; n − 1 for the complete graph).
    pub degree: usize,
    /// Shares needed to reconstruct a secret.
    pub threshold: usize,
}

impl GraphParams {
    /// Parameters for `n` clients of which a fraction `corrupt` may collude
    /// with the server and a fraction `dropout` may drop out, against the
    /// given server.
    pub fn find(n: usize, corrupt: f64, dropout: f64, threat: Threat) -> Result<Self, SecAggError> {
        let least = match threat {
            Threat::Malicious => 3,
            Threat::SemiHonest => 2,
        };
        if n < least {
            return Err(SecAggError::Params(format!(
                "secure aggregation against a {} server needs at least {least} clients, got {n} \
                 (with two, each learns the other's input from the sum)",
                threat.label()
            )));
        }
        if !(0.0..1.0).contains(&corrupt) || !(0.0..1.0).contains(&dropout) {
            return Err(SecAggError::Params(format!(
                "corrupt ({corrupt}) and dropout ({dropout}) fractions must be in [0, 1)"
            )));
        }
        if corrupt + dropout > 0.9 {
            return Err(SecAggError::Params(format!(
                "corrupt + dropout = {} > 0.9: no threshold can be both secure and live",
                corrupt + dropout
            )));
        }
        let mut k = 2;
        while k < n - 1 {
            if let Some(t) = threshold_for(n, k, corrupt, dropout, threat) {
                return Ok(Self {
                    n,
                    degree: k,
                    threshold: t,
                });
            }
            k += 2;
        }
        // Complete graph: every other client is a neighbour.
        let k = n - 1;
        let t = match shamir_window(n, k, corrupt, dropout) {
            Some((t1, _)) => least_threshold(k, t1, threat),
            None => least_threshold(k, k.div_ceil(2), threat),
        }
        .clamp(1, k.max(1));
        Ok(Self {
            n,
            degree: k,
            threshold: t,
        })
    }

    /// Whether this threshold meets the malicious-server bound for `corrupt`
    /// neighbours: no two disjoint groups of honest neighbours can each reach
    /// `t` with the corrupt ones' help (`2t > k + corrupt`).
    pub fn resists_split_views(&self, corrupt_neighbours: usize) -> bool {
        2 * self.threshold > self.degree + corrupt_neighbours
    }

    /// The neighbours of client `i` (0-based positions in the round's
    /// sorted participant list), in increasing order, excluding `i`.
    pub fn neighbours(&self, i: usize) -> Vec<usize> {
        if self.degree >= self.n - 1 {
            return (0..self.n).filter(|&j| j != i).collect();
        }
        let half = self.degree / 2;
        let mut out: Vec<usize> = (1..=half)
            .flat_map(|d| [(i + d) % self.n, (i + self.n - d) % self.n])
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// ln P(the honest survivors' Harary graph is disconnected), by the union bound.
fn log_prob_disconnected(n: usize, k: usize, bad: usize) -> f64 {
    if k > bad {
        return f64::NEG_INFINITY;
    }
    let (n, k, bad) = (n as f64, k as f64, bad as f64);
    let log_gap_pairs = n.ln() + (n - k - 1.0).ln() - 2f64.ln();
    log_gap_pairs + libm::lgamma(bad + 1.0) + libm::lgamma(n - k + 1.0)
        - libm::lgamma(n + 1.0)
        - libm::lgamma(bad - k + 1.0)
}

/// The least threshold above `c` corrupt neighbours (and, against a
/// malicious server, above `(k + c) / 2`); at least 2, since one Shamir share
/// of a degree-0 polynomial is the secret itself.
///
/// `2t > k + c` suffices on the ring too. To unmask a survivor v alone the
/// server needs, for every honest neighbour g that revealed a share of v's
/// self-mask seed, g's mask key (v's own is guarded by the same bound). g
/// revealed only after `t` of its neighbours confirmed g's survivor set — at
/// least `t − c` honest ones, who then see g surviving and reveal its seed,
/// not its key — so at most `k − (t − c)` honest neighbours of g could reveal
/// its key, and with the `c` corrupt ones that is below `t`.
fn least_threshold(k: usize, c: usize, threat: Threat) -> usize {
    let t = match threat {
        Threat::SemiHonest => c + 1,
        Threat::Malicious => (c + 1).max((k + c) / 2 + 1),
    };
    t.max(2)
}

/// The threshold for degree k, if k is secure and live.
fn threshold_for(n: usize, k: usize, corrupt: f64, dropout: f64, threat: Threat) -> Option<usize> {
    let adversarial = ((corrupt + SMALL) * n as f64).floor() as usize;
    let dropped = ((dropout + SMALL) * n as f64).floor() as usize;
    let per_event = -(SECURITY_BITS + 1.0) * 2f64.ln();
    if log_prob_disconnected(n, k, adversarial + dropped) >= per_event {
        return None;
    }
    let (t1, t2) = shamir_window(n, k, corrupt, dropout)?;
    // t must still be live (≤ t2).
    let t = least_threshold(k, t1, threat);
    (t <= t2).then_some(t)
}

/// (t1, t2): thresholds must lie in (t1, t2].
fn shamir_window(n: usize, k: usize, corrupt: f64, dropout: f64) -> Option<(usize, usize)> {
    let adversarial = ((corrupt + SMALL) * n as f64).floor() as usize;
    let surviving = ((1.0 - dropout - SMALL) * n as f64).ceil() as usize;
    let p_security = 2f64.powf(-(SECURITY_BITS + 1.0)) / n as f64;
    let p_failure = 2f64.powf(-CORRECTNESS_BITS) / n as f64;
    let adv = Hypergeometric::new(n, adversarial, k);
    let surv = Hypergeometric::new(n, surviving, k);
    // Smallest t1 with P(adversarial neighbours > t1) ≤ p_security.
    let t1 = (0..=k).find(|&x| adv.sf(x) <= p_security)?;
    // Smallest t2 with P(surviving neighbours ≤ t2) ≥ p_failure: any t ≤ t2
    // fails (fewer than t survivors) with probability < p_failure.
    let t2 = (0..=k).find(|&x| surv.cdf(x) >= p_failure)?;
    Some((t1, t2))
}

/// Hypergeometric: draws `k` from `n` items of which `good` are marked.
struct Hypergeometric {
    pmf: Vec<f64>,
}

impl Hypergeometric {
    fn new(n: usize, good: usize, k: usize) -> Self {
        let ln_choose = |a: usize, b: usize| {
            if b > a {
                f64::NEG_INFINITY
            } else {
                libm::lgamma(a as f64 + 1.0)
                    - libm::lgamma(b as f64 + 1.0)
                    - libm::lgamma((a - b) as f64 + 1.0)
            }
        };
        let total = ln_choose(n, k);
        let pmf = (0..=k)
            .map(|x| {
                if x > good || k - x > n - good {
                    0.0
                } else {
                    (ln_choose(good, x) + ln_choose(n - good, k - x) - total).exp()
                }
            })
            .collect();
        Self { pmf }
    }

    /// P(X ≤ x).
    fn cdf(&self, x: usize) -> f64 {
        self.pmf[..=x.min(self.pmf.len() - 1)].iter().sum()
    }

    /// P(X > x), summed from the tail for accuracy.
    fn sf(&self, x: usize) -> f64 {
        self.pmf.iter().skip(x + 1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_published_parameters() {
        // Google fcp graph_parameter_finder values (../shared/design/ANCHORS.md).
        for (n, c, d, want) in [
            (1000, 0.05, 0.05, (30, 17)),
            (1000, 0.10, 0.10, (48, 27)),
            (10_000, 0.05, 0.05, (34, 20)),
            (10_000, 0.10, 0.10, (54, 31)),
        ] {
            let p = GraphParams::find(n, c, d, Threat::SemiHonest).unwrap();
            assert_eq!((p.degree, p.threshold), want, "n={n}, {c}+{d}");
        }
    }

    #[test]
    fn malicious_thresholds_resist_split_views() {
        for n in [3, 5, 10, 30, 100, 300, 1000, 10_000] {
            for (c, d) in [
                (0.0, 0.1),
                (0.05, 0.05),
                (0.05, 0.1),
                (0.1, 0.1),
                (0.2, 0.2),
            ] {
                let p = GraphParams::find(n, c, d, Threat::Malicious).unwrap();
                let bound = shamir_window(n, p.degree, c, d).map_or(0, |w| w.0);
                assert!(
                    p.resists_split_views(bound),
                    "n={n} c={c} d={d}: k={} t={} corrupt bound {bound}",
                    p.degree,
                    p.threshold
                );
                assert!(p.threshold >= 2 && p.threshold <= p.degree);
                let semi = GraphParams::find(n, c, d, Threat::SemiHonest).unwrap();
                assert!(p.threshold >= semi.threshold);
            }
        }
    }

    #[test]
    fn small_rounds_use_the_complete_graph() {
        let p = GraphParams::find(5, 0.0, 0.2, Threat::Malicious).unwrap();
        assert_eq!(p.degree, 4);
        assert!(p.threshold >= 1 && p.threshold <= 4);
        assert_eq!(p.neighbours(2), vec![0, 1, 3, 4]);
    }

    #[test]
    fn harary_neighbourhoods_are_symmetric_and_k_regular() {
        let p = GraphParams::find(300, 0.05, 0.1, Threat::Malicious).unwrap();
        assert!(p.degree < 299 && p.degree.is_multiple_of(2));
        for i in 0..300 {
            let ns = p.neighbours(i);
            assert_eq!(ns.len(), p.degree);
            for j in ns {
                assert!(p.neighbours(j).contains(&i));
            }
        }
    }

    #[test]
    fn infeasible_requests_are_refused() {
        for threat in [Threat::Malicious, Threat::SemiHonest] {
            assert!(GraphParams::find(1, 0.0, 0.0, threat).is_err());
            assert!(GraphParams::find(100, 0.5, 0.5, threat).is_err());
            assert!(GraphParams::find(100, -0.1, 0.0, threat).is_err());
        }
        // Two clients learn each other's input from the sum.
        assert!(GraphParams::find(2, 0.0, 0.0, Threat::Malicious).is_err());
    }
}
