//! Verification policy: how many workers run a task, when results agree,
//! and each worker's standing (BOINC's adaptive replication, in miniature).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tg_tasks::{TaskKind, TaskOutput};

/// How many replicas a task gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Redundancy {
    /// Every task needs `k` agreeing results from `k` distinct workers.
    Fixed(u8),
    /// BOINC's adaptive replication: two agreeing results while a worker is
    /// new; one once it has a valid streak of `trust_streak`, with a random
    /// spot check (two replicas) at `spot_check` rate.
    Adaptive,
}

impl Redundancy {
    /// Parses `1`..`5` or `auto`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "auto" {
            return Some(Self::Adaptive);
        }
        s.parse::<u8>()
            .ok()
            .filter(|k| (1..=5).contains(k))
            .map(Self::Fixed)
    }
}

/// Settings of verification and standing.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Valid results in a row after which a worker is trusted (adaptive only).
    pub trust_streak: u32,
    /// Share of a trusted worker's tasks still replicated.
    pub spot_check: f64,
    /// Strikes after which a worker gets no more work (when they are also
    /// more than a quarter of its valid results).
    pub exclude_after: u32,
    /// Extra replicas asked for to break a disagreement, beyond the first round.
    pub tie_breakers: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            trust_streak: 10,
            spot_check: 0.1,
            exclude_after: 2,
            tie_breakers: 3,
        }
    }
}

/// A worker's record with this submitter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// Results in the verified majority.
    pub valid: u32,
    /// Results in a disagreeing minority.
    pub invalid: u32,
    /// Valid results since the last invalid one.
    pub streak: u32,
    /// Assignments that timed out or were declined.
    pub timeouts: u32,
    /// No more work goes to it.
    pub excluded: bool,
}

impl Standing {
    /// Score in (0, 1]: the share of valid results, smoothed, with timeouts counted at a quarter.
    pub fn score(&self) -> f64 {
        if self.excluded {
            return 0.0;
        }
        (f64::from(self.valid) + 1.0)
            / (f64::from(self.valid)
                + 4.0 * f64::from(self.invalid)
                + 0.25 * f64::from(self.timeouts)
                + 1.0)
    }
}

/// Every worker's standing, by public key.
#[derive(Debug, Default, Clone)]
pub struct Standings {
    /// Standings.
    pub by_worker: HashMap<[u8; 32], Standing>,
}

impl Standings {
    /// A worker's standing (default for a new one).
    pub fn get(&self, w: &[u8; 32]) -> Standing {
        self.by_worker.get(w).cloned().unwrap_or_default()
    }

    /// Records a valid result.
    pub fn valid(&mut self, w: [u8; 32]) {
        let s = self.by_worker.entry(w).or_default();
        s.valid += 1;
        s.streak += 1;
    }

    /// Records a result in a disagreeing minority; returns whether this
    /// strike excluded it (true once, at the transition).
    pub fn invalid(&mut self, w: [u8; 32], p: &Policy) -> bool {
        let s = self.by_worker.entry(w).or_default();
        s.invalid += 1;
        s.streak = 0;
        // Excluded after `exclude_after` strikes that are also more than a
        // quarter of its valid results: a long honest record outweighs a
        // rare framing, a liar's record does not.
        let newly = !s.excluded && s.invalid >= p.exclude_after && s.invalid * 4 > s.valid;
        s.excluded |= newly;
        newly
    }

    /// Ends a worker's valid streak (a minority result, struck or not).
    pub fn doubt(&mut self, w: [u8; 32]) {
        self.by_worker.entry(w).or_default().streak = 0;
    }

    /// Records a timeout or decline.
    pub fn timeout(&mut self, w: [u8; 32]) {
        self.by_worker.entry(w).or_default().timeouts += 1;
    }

    /// Replicas the first worker's standing calls for; `coin` is uniform in [0, 1).
    pub fn replicas(&self, r: Redundancy, first: &[u8; 32], p: &Policy, coin: f64) -> usize {
        match r {
            Redundancy::Fixed(k) => usize::from(k),
            Redundancy::Adaptive => {
                if self.get(first).streak >= p.trust_streak && coin >= p.spot_check {
                    1
                } else {
                    2
                }
            }
        }
    }
}

/// The outcome of comparing a task's results.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A quorum agrees: these result indices are valid, the others invalid.
    Verified {
        /// Index of the result taken as the answer.
        answer: usize,
        /// Indices in the agreeing group.
        agreeing: Vec<usize>,
        /// Indices outside it.
        disagreeing: Vec<usize>,
    },
    /// More results are needed.
    NeedMore(usize),
    /// No quorum is possible within the replica budget.
    Failed(String),
}

/// Groups results by agreement and decides. `quorum` agreeing results are
/// needed, and that group must be larger than any other; `budget` is the
/// most results this task may get in all.
pub fn judge(
    kind: &dyn TaskKind,
    results: &[&TaskOutput],
    quorum: usize,
    budget: usize,
) -> Verdict {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match groups.iter_mut().find(|g| kind.agree(results[g[0]], r)) {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.len()));
    let best = groups.first().map_or(0, Vec::len);
    let second = groups.get(1).map_or(0, Vec::len);
    if best >= quorum && best > second {
        let agreeing = groups[0].clone();
        let disagreeing = groups[1..].iter().flatten().copied().collect();
        return Verdict::Verified {
            answer: agreeing[0],
            agreeing,
            disagreeing,
        };
    }
    // Results needed for the largest group to reach the quorum and lead.
    let need = quorum
        .saturating_sub(best)
        .max(second + 1 - best.min(second + 1))
        .max(1);
    if results.len() + need > budget {
        return Verdict::Failed(format!(
            "workers disagree: {} results in {} groups, no group of {quorum} that leads",
            results.len(),
            groups.len()
        ));
    }
    Verdict::NeedMore(need)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tg_tasks::kind_by_name;

    fn e(v: &[f32]) -> TaskOutput {
        TaskOutput::Embeddings(vec![v.to_vec()])
    }

    #[test]
    fn two_agreeing_results_verify() {
        let k = kind_by_name("embed").unwrap();
        let (a, b) = (e(&[1.0, 0.0]), e(&[1.0, 1e-5]));
        assert!(matches!(
            judge(k, &[&a, &b], 2, 4),
            Verdict::Verified { .. }
        ));
    }

    #[test]
    fn a_liar_forces_a_tie_breaker_and_loses() {
        let k = kind_by_name("embed").unwrap();
        let (good, bad) = (e(&[1.0, 0.0]), e(&[0.0, 1.0]));
        assert_eq!(judge(k, &[&good, &bad], 2, 4), Verdict::NeedMore(1));
        let good2 = e(&[1.0, 0.0]);
        match judge(k, &[&good, &bad, &good2], 2, 4) {
            Verdict::Verified {
                agreeing,
                disagreeing,
                ..
            } => {
                assert_eq!(agreeing, vec![0, 2]);
                assert_eq!(disagreeing, vec![1]);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn colluding_liars_that_tie_do_not_win() {
        let k = kind_by_name("embed").unwrap();
        let (g, b) = (e(&[1.0, 0.0]), e(&[0.0, 1.0]));
        assert!(matches!(
            judge(k, &[&g, &b, &g, &b], 2, 4),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn adaptive_replication_trusts_a_streak_and_spot_checks() {
        let mut s = Standings::default();
        let p = Policy::default();
        let w = [7u8; 32];
        assert_eq!(s.replicas(Redundancy::Adaptive, &w, &p, 0.99), 2);
        for _ in 0..p.trust_streak {
            s.valid(w);
        }
        assert_eq!(s.replicas(Redundancy::Adaptive, &w, &p, 0.99), 1);
        assert_eq!(s.replicas(Redundancy::Adaptive, &w, &p, 0.01), 2);
        s.invalid(w, &p);
        assert_eq!(s.replicas(Redundancy::Adaptive, &w, &p, 0.99), 2);
        // Ten valid results outweigh two strikes; a third (more than a quarter) excludes.
        assert!(!s.invalid(w, &p));
        assert!(s.invalid(w, &p));
        assert_eq!(s.get(&w).score(), 0.0);
        // A fresh worker is excluded at its second strike.
        let liar = [8u8; 32];
        assert!(!s.invalid(liar, &p));
        assert!(s.invalid(liar, &p));
    }
}
