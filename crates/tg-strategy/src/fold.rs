//! Streaming aggregation: each update is folded into an exact accumulator the
//! moment it arrives, and then dropped.
//!
//! Design decision: the accumulator is fixed point (`i64` lanes counting
//! 2⁻³² units), not floating point. Integer addition is associative, so the
//! sum — and hence the next global model, bit for bit — does not depend on the
//! order in which updates arrive: the in-process demo and a fleet on a real
//! network fold the same updates to the same model. Memory is one exact sum
//! per parameter (plus one more for SCAFFOLD's control variates), whatever
//! the number of clients, held in six bytes while the sum stays within
//! ±32,767 (see `acc`: 1.5× the model's `f32` size, 2× once widened, about
//! 3.7× for the moment of widening). The grid,
//! 2⁻³² ≈ 2.3·10⁻¹⁰, is finer than an `f32`'s
//! resolution for any value above 2⁻⁹.
//!
//! A fold is sized for the round: it takes at most `capacity` updates (the
//! agents selected), and each weighted term must stay below `i64::MAX /
//! capacity` — so the sum can never overflow, and an update is refused only
//! for its *own* magnitude, never for room that earlier updates used up (one
//! agent cannot crowd the others out). A refused update leaves nothing behind:
//! every check that can fail runs before the sum is touched, except the
//! per-lane bound, whose partial work is undone exactly.

use std::collections::BTreeSet;

use tg_types::view::Lanes;

use crate::acc::Acc;
use tg_types::{AgentId, NamedTensor, Parameters, ParamsError};

use crate::{ClientUpdate, Result, StrategyError};

/// Fixed-point scale: one unit is 2⁻³².
const SCALE: f64 = 4_294_967_296.0;

/// The largest weighted term (in units) a fold of `capacity` updates accepts.
fn term_limit(capacity: usize) -> i64 {
    i64::MAX / i64::try_from(capacity.max(1)).unwrap_or(i64::MAX)
}

/// How each update is weighted in the sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Weighting {
    /// By its example count (FedAvg: `Σ nᵢΔᵢ / Σ nᵢ`).
    Examples,
    /// Equally (SCAFFOLD, DP-FedAvg).
    Uniform,
}

/// What a strategy needs folded from each update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FoldRule {
    /// Weighting of updates.
    pub weighting: Weighting,
    /// Each update is scaled to L2 norm at most this before folding (DP).
    pub clip: Option<f64>,
    /// Also fold SCAFFOLD's control-variate change (refusing updates without one).
    pub control: bool,
    /// Also keep each accepted update whole (O(clients × model) memory),
    /// for a strategy that needs every update (a user's own, e.g. from
    /// Python). Secure rounds never have individual updates to keep.
    pub keep: bool,
}

impl FoldRule {
    /// Example-weighted, unclipped (FedAvg, FedProx, FedAdam).
    pub fn examples() -> Self {
        Self {
            weighting: Weighting::Examples,
            clip: None,
            control: false,
            keep: false,
        }
    }

    /// The same rule, also keeping each accepted update (see [`FoldRule::keep`]).
    #[must_use]
    pub fn keeping(mut self) -> Self {
        self.keep = true;
        self
    }
}

/// An accepted update, kept whole for a strategy that asked
/// ([`FoldRule::keep`]), as it arrived (before any weighting or clip).
#[derive(Clone, Debug)]
pub struct Kept {
    /// Its agent.
    pub agent: AgentId,
    /// Its example count, as reported.
    pub num_examples: u64,
    /// `local − global`.
    pub update: Parameters,
}

/// The round's running sum: O(model) memory whatever the number of clients.
#[derive(Debug)]
pub struct Fold {
    rule: FoldRule,
    capacity: usize,
    limit: i64,
    layout: Vec<(String, Vec<usize>)>,
    sum: Acc,
    control: Option<Acc>,
    weight: u64,
    unclipped: usize,
    agents: BTreeSet<AgentId>,
    kept: Vec<Kept>,
}

impl Fold {
    /// An empty sum over at most `capacity` updates laid out like `global`.
    pub fn new(rule: FoldRule, global: &Parameters, capacity: usize) -> Self {
        let n = global.num_values();
        Self {
            rule,
            capacity,
            limit: term_limit(capacity),
            layout: global
                .tensors()
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect(),
            sum: Acc::zeros(n),
            control: rule.control.then(|| Acc::zeros(n)),
            weight: 0,
            unclipped: 0,
            agents: BTreeSet::new(),
            kept: Vec::new(),
        }
    }

    /// The accepted updates, in canonical (agent) order, when the rule
    /// keeps them; empty otherwise.
    pub fn kept(&self) -> &[Kept] {
        &self.kept
    }

    /// The accepted updates, taken out of the fold (see [`Fold::kept`]).
    pub fn into_kept(self) -> Vec<Kept> {
        self.kept
    }

    /// (name, shape) of each tensor: the round's layout.
    pub fn layout(&self) -> &[(String, Vec<usize>)] {
        &self.layout
    }

    /// The rule this fold applies.
    pub fn rule(&self) -> FoldRule {
        self.rule
    }

    /// Updates folded so far.
    pub fn count(&self) -> usize {
        self.agents.len()
    }

    /// Σ weights (examples, or the count when uniform).
    pub fn weight(&self) -> u64 {
        self.weight
    }

    /// Updates whose norm was already within the clip (adaptive clipping's count).
    pub fn unclipped(&self) -> usize {
        self.unclipped
    }

    /// The agents folded so far, in canonical order.
    pub fn agents(&self) -> impl Iterator<Item = &AgentId> {
        self.agents.iter()
    }

    /// Folds one update in. On error nothing of it remains in the sum.
    pub fn add(&mut self, u: &ClientUpdate) -> Result<()> {
        self.add_parts(
            &u.agent,
            u.num_examples,
            &u.update,
            u.control_delta.as_ref(),
        )
    }

    /// Folds one update given by parts — e.g. read straight from a received
    /// frame's bytes, never copied. On error nothing of it remains in the sum.
    pub fn add_parts<U: Lanes, C: Lanes>(
        &mut self,
        agent: &AgentId,
        num_examples: u64,
        update: &U,
        control_delta: Option<&C>,
    ) -> Result<()> {
        // Every check that can fail without touching the sum comes first.
        self.check_layout(update)?;
        if self.agents.contains(agent) {
            return Err(StrategyError::Config(format!(
                "{agent} contributed twice to one round"
            )));
        }
        if self.agents.len() >= self.capacity {
            return Err(StrategyError::Config(format!(
                "update from {agent} is one more than the {} this round selected",
                self.capacity
            )));
        }
        if !update.all_finite() {
            return Err(StrategyError::Config(format!(
                "update from {agent} has non-finite values"
            )));
        }
        let weight = match self.rule.weighting {
            Weighting::Examples => num_examples,
            Weighting::Uniform => 1,
        };
        let w = i64::try_from(weight).map_err(|_| out_of_range(agent))?;
        let new_weight = self
            .weight
            .checked_add(weight)
            .ok_or_else(|| out_of_range(agent))?;
        let (factor, clipping) = match self.rule.clip {
            Some(c) => {
                let norm = update.l2_norm();
                (if norm <= c { 1.0 } else { c / norm }, true)
            }
            None => (1.0, false),
        };
        let control = match (self.control.is_some(), control_delta) {
            (false, _) => None,
            (true, Some(dc)) => {
                self.check_layout(dc)?;
                if !dc.all_finite() {
                    return Err(StrategyError::Config(format!(
                        "control delta from {agent} has non-finite values"
                    )));
                }
                Some(dc)
            }
            (true, None) => {
                return Err(StrategyError::MissingField {
                    agent: agent.clone(),
                    what: "SCAFFOLD control delta",
                });
            }
        };
        // Kept whole (when asked) before the sum is touched.
        let kept = if self.rule.keep {
            let mut lanes = update.lanes();
            let tensors = self
                .layout
                .iter()
                .map(|(name, shape)| NamedTensor {
                    name: name.clone(),
                    shape: shape.clone(),
                    data: lanes.by_ref().take(shape.iter().product()).collect(),
                })
                .collect();
            Some(Kept {
                agent: agent.clone(),
                num_examples,
                update: Parameters::new(tensors)?,
            })
        } else {
            None
        };
        let update_term = Term {
            factor,
            truncate: clipping,
            weight: w,
            limit: self.limit,
        };
        add_lanes(&mut self.sum, update, update_term).map_err(|()| out_of_range(agent))?;
        if let (Some(acc), Some(dc)) = (self.control.as_mut(), control) {
            let control_term = Term {
                factor: 1.0,
                truncate: false,
                weight: 1,
                limit: self.limit,
            };
            if add_lanes(acc, dc, control_term).is_err() {
                let all = self.sum.len();
                undo_lanes(&mut self.sum, update, update_term, all);
                return Err(out_of_range(agent));
            }
        }
        self.weight = new_weight;
        if factor >= 1.0 {
            self.unclipped += 1;
        }
        if let Some(kept) = kept {
            // Canonical order, whatever the arrival order.
            let at = self.kept.partition_point(|k| k.agent < kept.agent);
            self.kept.insert(at, kept);
        }
        self.agents.insert(agent.clone());
        Ok(())
    }

    /// `Σ wᵢΔᵢ / Σ wᵢ` as parameters (the weighted mean update).
    pub fn mean(&self) -> Result<Parameters> {
        if self.agents.is_empty() {
            return Err(StrategyError::NoResults);
        }
        if self.weight == 0 {
            return Err(StrategyError::ZeroWeight);
        }
        self.to_params(&self.sum, self.weight as f64)
    }

    /// `target += alpha · mean` lane by lane, as `Parameters::add_scaled`
    /// would with [`Fold::mean`], but without holding the mean as well.
    pub fn add_mean_to(&self, target: &mut Parameters, alpha: f32) -> Result<()> {
        self.check_layout(target)?;
        if self.agents.is_empty() {
            return Err(StrategyError::NoResults);
        }
        if self.weight == 0 {
            return Err(StrategyError::ZeroWeight);
        }
        let w = self.weight as f64;
        for (t, s) in target.values_mut().zip(self.sum.iter()) {
            *t += alpha * ((s as f64 / SCALE / w) as f32);
        }
        Ok(())
    }

    /// `Σ wᵢΔᵢ` in f64 (what DP noise is added to).
    pub fn sum_f64(&self) -> Vec<f64> {
        self.sum.iter().map(|s| s as f64 / SCALE).collect()
    }

    /// `Σ Δcᵢ / divisor` (SCAFFOLD's control step), if control deltas were folded.
    pub fn control_scaled(&self, divisor: f64) -> Result<Option<Parameters>> {
        self.control
            .as_ref()
            .map(|c| self.to_params(c, divisor))
            .transpose()
    }

    /// Parameters of this layout from f64 lanes.
    pub fn params_from(&self, lanes: &[f64]) -> Result<Parameters> {
        self.laid_out(|at, len| lanes[at..at + len].iter().map(|&v| v as f32).collect())
    }

    fn to_params(&self, lanes: &Acc, divisor: f64) -> Result<Parameters> {
        self.laid_out(|at, len| {
            (at..at + len)
                .map(|i| (lanes.get(i) as f64 / SCALE / divisor) as f32)
                .collect()
        })
    }

    /// Parameters of this layout, each tensor's values from `values(at, len)`.
    fn laid_out(&self, values: impl Fn(usize, usize) -> Vec<f32>) -> Result<Parameters> {
        let mut tensors = Vec::with_capacity(self.layout.len());
        let mut at = 0;
        for (name, shape) in &self.layout {
            let len: usize = shape.iter().product();
            tensors.push(NamedTensor {
                name: name.clone(),
                shape: shape.clone(),
                data: values(at, len),
            });
            at += len;
        }
        Ok(Parameters::new(tensors)?)
    }

    fn check_layout(&self, p: &impl Lanes) -> Result<()> {
        let same = p.layout().count() == self.layout.len()
            && p.num_lanes() == self.sum.len()
            && p.layout()
                .zip(&self.layout)
                .all(|((n, s), (name, shape))| n == name && s == shape.as_slice());
        if same {
            Ok(())
        } else {
            Err(ParamsError::LayoutMismatch(
                "the update's tensor names or shapes differ from the global model's".into(),
            )
            .into())
        }
    }
}

fn out_of_range(agent: &AgentId) -> StrategyError {
    StrategyError::Config(format!(
        "update from {agent} is outside the aggregator's exact range (a weighted value reached \
         2^31 / the round's size): it was refused whole; clip updates or check the client for divergence"
    ))
}

/// How one update's values become integer terms.
#[derive(Clone, Copy)]
struct Term {
    factor: f64,
    /// Round toward zero (clipped updates: the norm bound must survive).
    truncate: bool,
    weight: i64,
    limit: i64,
}

impl Term {
    /// `weight · q(factor · v)`, or `None` past the limit. `q` rounds half
    /// away from zero (as `f64::round`), or toward zero when truncating, with
    /// the SSE2 conversion rather than a libm call.
    #[inline(always)]
    fn of(self, v: f32) -> Option<i64> {
        let x = f64::from(v) * self.factor * SCALE;
        // |x| < 2⁶² (NaN fails too); the product then fits or is refused.
        if !(x.abs() < 4.611_686_018_427_388e18) {
            return None;
        }
        let t = x as i64; // toward zero; exact for integral x below 2⁶²
        let q = if self.truncate {
            t
        } else {
            let frac = x - t as f64;
            if frac >= 0.5 {
                t + 1
            } else if frac <= -0.5 {
                t - 1
            } else {
                t
            }
        };
        q.checked_mul(self.weight)
            .filter(|p| p.unsigned_abs() <= self.limit.unsigned_abs())
    }
}

/// `acc[j] += term(v[j])` for every lane, or, at the first term past the
/// limit, the lanes already changed restored and `Err`. No addition can
/// overflow: at most `capacity` terms, each within `i64::MAX / capacity`.
fn add_lanes(acc: &mut Acc, values: &impl Lanes, term: Term) -> std::result::Result<(), ()> {
    let mut failed_at = None;
    for (j, v) in values.lanes().take(acc.len()).enumerate() {
        match term.of(v) {
            Some(t) => acc.add(j, t),
            None => {
                failed_at = Some(j);
                break;
            }
        }
    }
    match failed_at {
        None => Ok(()),
        Some(j) => {
            undo_lanes(acc, values, term, j);
            Err(())
        }
    }
}

/// Subtracts the terms of lanes `..upto` again (each was added, so each is
/// within the limit and the subtraction is exact).
fn undo_lanes(acc: &mut Acc, values: &impl Lanes, term: Term, upto: usize) {
    for (j, v) in values.lanes().take(upto).enumerate() {
        if let Some(t) = term.of(v) {
            acc.add(j, -t);
        }
    }
}

#[cfg(test)]
#[path = "fold_tests.rs"]
mod tests;
