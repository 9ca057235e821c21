//! Robust aggregation: a wrapper that screens or combines individual
//! updates before the wrapped server optimizer steps.
//!
//! Design decision: as DP is, robustness is a *wrapper* ([`Robust`]) around
//! FedAvg, FedProx or FedAdam, not a strategy of its own. The wrapper keeps
//! every update of the round (the rules need them all, so memory is
//! O(clients × model), said by [`FoldRule::keep`]), computes what its rule
//! lets through, and hands the inner strategy either the admitted updates
//! (Multi-Krum, the 3σ filter, norm bounding: example-weighted as before) or
//! one combined update (median, trimmed mean, Krum, Bulyan). A rule refuses a
//! round with fewer updates than it needs for its `f` attackers. Every
//! update's screening — its score and whether it was admitted — is kept for
//! the round's record and audit ([`Strategy::screened`]). A fixed norm bound
//! needs no update kept: it is the fold's own clip, streamed.

use rand::RngCore;
use tg_types::robust::{AggregatorKind, RobustSpec};
use tg_types::{AgentId, Parameters};

use crate::robust_rules as rules;
use crate::{ClientUpdate, Fold, FoldRule, Kept, Result, Strategy, StrategyError, TrainPlan};

/// One update as a robust rule judged it.
#[derive(Clone, Debug, PartialEq)]
pub struct Screened {
    /// Its agent.
    pub agent: AgentId,
    /// The rule's score: the robust z-score (3σ filter), the Krum score
    /// (Krum, Multi-Krum, Bulyan), the L2 norm (norm bound), or the L2
    /// distance to the aggregate (median, trimmed mean).
    pub score: f64,
    /// Whether the update reached the aggregate (a clipped update did).
    pub admitted: bool,
    /// How far the update lies from the round's others, the same for every
    /// rule: the one-sided robust z-score (σ̂ = 1.4826 · MAD, at least a
    /// quarter of the median) of its L2 distance to the round's
    /// coordinate-wise median. Reputation flags an update above its policy's
    /// `flag_z`; being left out by Krum alone says nothing.
    pub outlier_z: f64,
}

/// A robust rule around a server optimizer.
pub struct Robust {
    inner: Box<dyn Strategy>,
    spec: RobustSpec,
    /// The last aggregated step and a digest of the model it produced (the
    /// 3σ filter's cosine reference, used only while the round starts from
    /// that model: not after a rejected candidate or a rollback).
    last_step: Option<(Vec<f64>, u64)>,
    screened: Vec<Screened>,
    /// Reputation's example weights for the next round (absent: 1).
    weights: std::collections::BTreeMap<AgentId, f64>,
    /// The spread of updates' distances to the median in the last rounds
    /// (the outlier score's floor).
    spreads: std::collections::VecDeque<f64>,
}

/// Rounds of spread kept for the outlier score's floor.
const SPREAD_ROUNDS: usize = 10;

impl std::fmt::Debug for Robust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Robust")
            .field("inner", &self.inner.name())
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Robust {
    /// Wraps `inner` with the rule of `spec` (checked).
    pub fn new(inner: Box<dyn Strategy>, spec: RobustSpec) -> Result<Self> {
        spec.check().map_err(StrategyError::Config)?;
        // Only a plain example-weighted optimizer: a wrapper's fold rule
        // replaces the inner one, so an inner clip (central DP) would be lost.
        if inner.fold_rule() != crate::FoldRule::examples() {
            return Err(StrategyError::Config(format!(
                "the {} aggregator wraps fedavg, fedprox or fedadam, not {}",
                spec.kind,
                inner.name()
            )));
        }
        Ok(Self {
            inner,
            spec,
            last_step: None,
            screened: Vec::new(),
            weights: std::collections::BTreeMap::new(),
            spreads: Default::default(),
        })
    }

    /// The rule.
    pub fn spec(&self) -> RobustSpec {
        self.spec
    }

    fn streams(&self) -> bool {
        self.spec.kind == AggregatorKind::FedAvg
            || (self.spec.kind == AggregatorKind::NormBound && self.spec.norm_bound.is_some())
    }

    /// What the rule admits of `kept` (canonical order), with every update's
    /// screening.
    fn screen(&mut self, global: &Parameters, kept: &[Kept]) -> Result<Admitted> {
        let n = kept.len();
        if let Some(why) = self.spec.refuses(n) {
            return Err(StrategyError::Rejected(format!("E113 {why}")));
        }
        let flat: Vec<Vec<f32>> = kept.iter().map(|k| k.update.values().collect()).collect();
        let ups: Vec<&[f32]> = flat.iter().map(Vec::as_slice).collect();
        let f = self.spec.f as usize;
        let all = |score: Vec<f64>| -> Vec<(f64, bool)> {
            score.into_iter().map(|s| (s, true)).collect()
        };
        let marks = |scores: &[f64], chosen: &[usize]| -> Vec<(f64, bool)> {
            scores
                .iter()
                .enumerate()
                .map(|(i, &s)| (s, chosen.contains(&i)))
                .collect()
        };
        // The round's coordinate-wise median: the median rule's result, the
        // 3σ filter's first reference and every rule's outlier yardstick.
        let med = rules::coordinate_median(&ups);
        let to_agg = |agg: &[f64]| -> Vec<f64> {
            ups.iter()
                .map(|u| {
                    u.iter()
                        .zip(agg)
                        .map(|(&a, &b)| (f64::from(a) - b).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .collect()
        };
        let outlier = {
            let d = to_agg(&med);
            // The spread's floor: a quarter of the median distance, and half
            // the median spread of the last rounds, which colluders who hold
            // this round's median (identical updates: spread 0) cannot set.
            let mut dev: Vec<f64> = {
                let m = rules::median(&d);
                d.iter().map(|x| (x - m).abs()).collect()
            };
            let spread = 1.4826 * rules::median_in_place(&mut dev);
            let past = self.spreads.make_contiguous();
            let floor = (0.25 * rules::median(&d)).max(if past.len() >= 3 {
                0.5 * rules::median(past)
            } else {
                0.0
            });
            self.spreads.push_back(spread);
            if self.spreads.len() > SPREAD_ROUNDS {
                self.spreads.pop_front();
            }
            rules::robust_z(&d, floor)
        };
        let mut admitted = match self.spec.kind {
            AggregatorKind::FedAvg => Admitted::weighted(all(vec![0.0; n]), None),
            AggregatorKind::NormBound => {
                let norms: Vec<f64> = ups.iter().map(|u| rules::norm(u)).collect();
                let bound = match self.spec.norm_bound {
                    Some(b) => b,
                    // The lower median: with an even count, an attacker's
                    // norm cannot set the bound by averaging.
                    None => rules::lower_median(&norms),
                };
                Admitted::weighted(all(norms), Some(bound))
            }
            AggregatorKind::Median => Admitted::combined(all(to_agg(&med)), med),
            AggregatorKind::TrimmedMean => {
                let agg = rules::trimmed_mean(&ups, f);
                Admitted::combined(all(to_agg(&agg)), agg)
            }
            AggregatorKind::Krum | AggregatorKind::MultiKrum => {
                let dist = rules::squared_distances(&ups);
                let idx: Vec<usize> = (0..n).collect();
                let scores = rules::krum_scores(&dist, &idx, f);
                if self.spec.kind == AggregatorKind::Krum {
                    let best = rules::lowest(&scores, 1)[0];
                    let agg = ups[best].iter().map(|&v| f64::from(v)).collect();
                    Admitted::combined(marks(&scores, &[best]), agg)
                } else {
                    let chosen = rules::lowest(&scores, n - f);
                    Admitted::weighted(marks(&scores, &chosen), None)
                }
            }
            AggregatorKind::Bulyan => {
                let dist = rules::squared_distances(&ups);
                let idx: Vec<usize> = (0..n).collect();
                let scores = rules::krum_scores(&dist, &idx, f);
                let (agg, chosen) = rules::bulyan(&ups, f);
                Admitted::combined(marks(&scores, &chosen), agg)
            }
            AggregatorKind::Outlier3Sigma => {
                let norms: Vec<f64> = ups.iter().map(|u| rules::norm(u)).collect();
                let reference = match &self.last_step {
                    Some((s, from)) if *from == digest(global) && s.iter().any(|v| *v != 0.0) => {
                        s.clone()
                    }
                    _ => med,
                };
                let cos: Vec<f64> = ups
                    .iter()
                    .map(|u| rules::cosine_distance(u, &reference))
                    .collect();
                // Spread floors: a tenth of the median norm, and 0.1 of
                // cosine distance (which spans [0, 2]).
                let floor = 0.1 * rules::median(&norms);
                let (zn, zc) = (rules::robust_z(&norms, floor), rules::robust_z(&cos, 0.1));
                let marks = zn
                    .iter()
                    .zip(&zc)
                    .map(|(&a, &b)| {
                        let z = a.max(b);
                        (z, z <= 3.0)
                    })
                    .collect();
                Admitted::weighted(marks, None)
            }
            other => {
                return Err(StrategyError::Config(format!(
                    "aggregator {other} is not supported by this build"
                )));
            }
        };
        admitted.outlier = outlier;
        Ok(admitted)
    }
}

/// What a rule lets through.
struct Admitted {
    /// (score, admitted) per kept update.
    marks: Vec<(f64, bool)>,
    /// One combined update, or `None`: the admitted updates, weighted.
    combined: Option<Vec<f64>>,
    /// Scale each admitted update to this L2 norm at most.
    clip: Option<f64>,
    /// Each update's outlier z-score ([`Screened::outlier_z`]).
    outlier: Vec<f64>,
}

impl Admitted {
    fn weighted(marks: Vec<(f64, bool)>, clip: Option<f64>) -> Self {
        Self {
            marks,
            combined: None,
            clip,
            outlier: Vec::new(),
        }
    }
    fn combined(marks: Vec<(f64, bool)>, agg: Vec<f64>) -> Self {
        Self {
            marks,
            combined: Some(agg),
            clip: None,
            outlier: Vec::new(),
        }
    }
}

/// A digest of a model's values, to tell whether a round starts from the
/// model the last one produced.
fn digest(p: &Parameters) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for v in p.values() {
        v.to_bits().hash(&mut h);
    }
    h.finish()
}

/// `global`'s layout with `values`.
fn laid_out(global: &Parameters, values: impl Iterator<Item = f32>) -> Parameters {
    let mut p = global.zeros_like();
    for (t, v) in p.values_mut().zip(values) {
        *t = v;
    }
    p
}

impl Strategy for Robust {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Parameters,
        available: &[AgentId],
        rng: &mut dyn RngCore,
    ) -> Result<TrainPlan> {
        self.inner.configure_train(round, global, available, rng)
    }

    fn fold_rule(&self) -> FoldRule {
        let inner = self.inner.fold_rule();
        if self.streams() {
            FoldRule {
                clip: self.spec.norm_bound,
                ..inner
            }
        } else {
            inner.keeping()
        }
    }

    fn takes_sparse_updates(&self) -> bool {
        false
    }

    fn screened(&self) -> Vec<Screened> {
        self.screened.clone()
    }

    fn reweigh(&mut self, weights: &std::collections::BTreeMap<AgentId, f64>) {
        self.weights = weights
            .iter()
            .filter(|(_, w)| w.is_finite() && **w > 0.0 && **w < 1.0)
            .map(|(a, w)| (a.clone(), *w))
            .collect();
    }

    fn apply(&mut self, round: u32, global: &Parameters, fold: Fold) -> Result<Parameters> {
        self.screened.clear();
        if self.streams() {
            return self.inner.apply(round, global, fold);
        }
        let kept = fold.into_kept();
        let admitted = self.screen(global, &kept)?;
        // Self-reported example counts weigh what the weighted rules admit:
        // each is capped at 3× the round's median count, so one admitted
        // update cannot outweigh the rest by claiming more data.
        let mut counts: Vec<f64> = kept.iter().map(|k| k.num_examples as f64).collect();
        let cap = (3.0 * rules::median_in_place(&mut counts)).max(1.0) as u64;
        self.screened = kept
            .iter()
            .zip(&admitted.marks)
            .zip(&admitted.outlier)
            .map(|((k, &(score, ok)), &outlier_z)| Screened {
                agent: k.agent.clone(),
                score,
                admitted: ok,
                outlier_z,
            })
            .collect();
        let weights = std::mem::take(&mut self.weights);
        let results: Vec<ClientUpdate> = match &admitted.combined {
            Some(agg) => {
                let first = kept.first().ok_or(StrategyError::NoResults)?;
                vec![ClientUpdate {
                    agent: first.agent.clone(),
                    update: laid_out(global, agg.iter().map(|&v| v as f32)),
                    num_examples: 1,
                    control_delta: None,
                }]
            }
            None => kept
                .into_iter()
                .zip(&admitted.marks)
                .filter(|(_, m)| m.1)
                .map(|(k, _)| {
                    let mut update = k.update;
                    if let Some(c) = admitted.clip {
                        let nrm = update.l2_norm();
                        if nrm > c {
                            update.scale((c / nrm) as f32);
                        }
                    }
                    // Reputation's down-weighting scales the capped count.
                    let w = weights.get(&k.agent).copied().unwrap_or(1.0);
                    let count = k.num_examples.min(cap);
                    ClientUpdate {
                        agent: k.agent,
                        update,
                        num_examples: ((count as f64 * w).round() as u64).max(1),
                        control_delta: None,
                    }
                })
                .collect(),
        };
        if results.is_empty() {
            return Err(StrategyError::Rejected(format!(
                "E113 the {} aggregator admitted none of the round's {} updates",
                self.spec.kind,
                self.screened.len()
            )));
        }
        let next = self.inner.aggregate_train(round, global, &results)?;
        if self.spec.kind != AggregatorKind::Outlier3Sigma {
            return Ok(next);
        }
        let step = next
            .values()
            .zip(global.values())
            .map(|(a, b)| f64::from(a) - f64::from(b))
            .collect();
        self.last_step = Some((step, digest(&next)));
        Ok(next)
    }
}

#[cfg(test)]
#[path = "robust_tests.rs"]
mod tests;
