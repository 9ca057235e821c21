//! Expert-wise aggregation of mixture-of-experts adapters.
//!
//! Design decision: the aggregation is a *ratio of sums*, so it needs no
//! individual update and runs unchanged on the sum that secure aggregation
//! (and distributed DP) reveals. Each client sends, in its model, Σ-able
//! pairs: for expert `e`, `w_e · Δ_e` in the expert's slice and `w_e` in
//! [`EXPERT_WEIGHT`]; for every shared tensor, `w · Δ` and `w` in
//! [`SHARED_WEIGHT`]. The client chooses its weights (examples × its mean
//! gate mass on `e`, zero below the gate threshold τ). The coordinator
//! folds updates uniformly and moves expert `e` by `Σ w_e Δ_e / Σ w_e`, and
//! shared tensors by `Σ w Δ / Σ w`. Under secure aggregation it cannot
//! check a client's weights or τ: it sees only sums.
//!
//! A tensor is per-expert when its leading dimension is the number of
//! experts `E` (the length of [`EXPERT_WEIGHT`]) and its name ends in
//! `lora_B` or has an `experts` path segment; expert `e` is its `e`-th
//! slice along that dimension.
//!
//! Task-indexed tensors (a task router's logits, a task embedding) have the
//! same problem as experts: a client trains only the rows of the tasks it
//! has, so an average over every client shrinks a row's step by the share
//! of clients that have its task (an eighth, with eight tasks spread
//! evenly). If the model carries [`TASK_WEIGHT`] (shape `[T]`), clients
//! send `w_t · Δ` in row `t` and `w_t` (their examples of task `t`) in it,
//! and row `t` moves by `Σ w_t Δ_t / Σ w_t`. A tensor is per-task when its
//! leading dimension is `T` and its name starts with `router.` or
//! `task_embed.` or has a `tasks` path segment. Every other tensor is
//! shared.
//!
//! Two optional tensors only report, and are never applied: with
//! [`EXPERT_TASK_MASS`] (`[E, T]`) clients send how much of each expert's
//! weight came from each task's examples, and with [`EXPERT_CLIENTS`]
//! (`[E]`) a 1 for each expert whose gate mass passed their threshold. The
//! round records, per expert, which tasks trained it and what share of the
//! clients did ([`ExpertStep::task_share`], [`ExpertStep::client_share`]),
//! from the sum alone like everything else.

use rand::RngCore;
use tg_types::{AgentId, Parameters};

use crate::{
    FedAvg, Fold, FoldRule, Result, Sampler, Strategy, StrategyError, TrainPlan, Weighting,
};

/// The tensor (shape `[E]`) in which clients send each expert's weight.
pub const EXPERT_WEIGHT: &str = "tg.expert_weight";
/// The tensor (shape `[1]`) in which clients send the shared tensors' weight.
pub const SHARED_WEIGHT: &str = "tg.shared_weight";
/// The optional tensor (shape `[T]`) in which clients send each task's
/// weight, for task-indexed tensors (see the module).
pub const TASK_WEIGHT: &str = "tg.task_weight";
/// The optional report tensor (shape `[E, T]`) in which clients send, per
/// expert, the part of its weight that came from each task's examples.
pub const EXPERT_TASK_MASS: &str = "tg.expert_task_mass";
/// The optional report tensor (shape `[E]`) in which clients send 1 for
/// each expert whose gate mass passed their threshold, 0 otherwise.
pub const EXPERT_CLIENTS: &str = "tg.expert_clients";

/// Whether a tensor is one of the weights or reports clients send beside
/// their update (never applied to the model).
fn is_weight_or_report(name: &str) -> bool {
    [
        EXPERT_WEIGHT,
        SHARED_WEIGHT,
        TASK_WEIGHT,
        EXPERT_TASK_MASS,
        EXPERT_CLIENTS,
    ]
    .contains(&name)
}

/// An expert receiving less than this share of the round's shared weight
/// (or a tenth of an even share, `0.1 / E`, if that is less) is left as it
/// was: a ratio with a near-zero (or, under distributed DP,
/// noise-dominated) denominator is no average.
pub const MIN_EXPERT_SHARE: f64 = 0.01;

/// Expert-wise FedAvg for mixture-of-experts adapters (see the module).
#[derive(Debug)]
pub struct ExpertWise {
    /// Sampling and the (plain) local objective are FedAvg's.
    sampling: FedAvg,
    server_lr: f32,
    last: Vec<ExpertStep>,
}

/// What one round did to one expert (the record type rounds carry).
pub use tg_types::record::ExpertStep;

impl ExpertWise {
    /// Expert-wise FedAvg with server step size `server_lr`.
    pub fn new(sampler: Sampler, server_lr: f32) -> Self {
        Self {
            sampling: FedAvg::new(sampler, server_lr),
            server_lr,
            last: Vec::new(),
        }
    }

    /// Per expert, what the last applied round did.
    pub fn last_round(&self) -> &[ExpertStep] {
        &self.last
    }
}

fn malformed(what: String) -> StrategyError {
    StrategyError::Config(format!(
        "expert-wise aggregation: {what}; build the model with tensorguard.lora \
         (expert_state_dict) so it carries `{EXPERT_WEIGHT}` [E] and `{SHARED_WEIGHT}` [1]"
    ))
}

/// Whether a tensor is per-expert: its name ends in `lora_B` or has an
/// `experts` path segment, and its leading dimension is `experts`.
pub fn is_per_expert(name: &str, shape: &[usize], experts: usize) -> bool {
    (name.ends_with("lora_B") || name.split('.').any(|s| s == "experts"))
        && shape.first() == Some(&experts)
}

/// Whether a tensor is per-task: its name starts with `router.` or
/// `task_embed.` or has a `tasks` path segment, and its leading dimension
/// is `tasks` (the length of [`TASK_WEIGHT`]).
pub fn is_per_task(name: &str, shape: &[usize], tasks: usize) -> bool {
    tasks > 0
        && (name.starts_with("router.")
            || name.starts_with("task_embed.")
            || name.split('.').any(|s| s == "tasks"))
        && shape.first() == Some(&tasks)
}

/// Why an expert-wise federation cannot start from `initial`, if it cannot:
/// the model must carry the weights its clients send, in their shapes and
/// at zero (clients send `global + w`, so a non-zero start would be
/// subtracted from every weight they send), and at least one per-expert
/// tensor — and, if it carries [`TASK_WEIGHT`], at least one per-task
/// tensor — or every round would fail or silently be FedAvg.
pub fn initial_model_refusal(initial: &Parameters) -> Option<String> {
    let find = |name: &str| initial.tensors().iter().find(|t| t.name == name);
    let fix = "build it with tensorguard.lora.expert_state_dict, or use fedavg";
    let (Some(experts), Some(shared)) = (find(EXPERT_WEIGHT), find(SHARED_WEIGHT)) else {
        return Some(format!(
            "strategy expert-wise needs a model of expert adapters carrying `{EXPERT_WEIGHT}` and `{SHARED_WEIGHT}` (what its clients weight their updates with); {fix}"
        ));
    };
    if experts.shape.len() != 1 || experts.data.is_empty() || shared.shape != [1] {
        return Some(format!(
            "strategy expert-wise: `{EXPERT_WEIGHT}` must have shape [E] and `{SHARED_WEIGHT}` shape [1], got {:?} and {:?}; {fix}",
            experts.shape, shared.shape
        ));
    }
    let e = experts.data.len();
    if !initial
        .tensors()
        .iter()
        .any(|t| is_per_expert(&t.name, &t.shape, e))
    {
        return Some(format!(
            "strategy expert-wise: no tensor is per-expert (a name ending in `lora_B` or with an `experts` segment, leading dimension {e}); {fix}"
        ));
    }
    let tasks = find(TASK_WEIGHT);
    if let Some(tasks) = tasks {
        if tasks.shape.len() != 1 || tasks.data.is_empty() {
            return Some(format!(
                "strategy expert-wise: `{TASK_WEIGHT}` must have shape [T], got {:?}; {fix}",
                tasks.shape
            ));
        }
        let t = tasks.data.len();
        if !initial
            .tensors()
            .iter()
            .any(|x| !is_per_expert(&x.name, &x.shape, e) && is_per_task(&x.name, &x.shape, t))
        {
            return Some(format!(
                "strategy expert-wise: `{TASK_WEIGHT}` names {t} tasks but no tensor is per-task (a name starting `router.` or `task_embed.` or with a `tasks` segment, leading dimension {t}); {fix}, or drop `{TASK_WEIGHT}`"
            ));
        }
    }
    let task_mass = find(EXPERT_TASK_MASS);
    if let Some(m) = task_mass
        && (m.shape.len() != 2 || m.shape[0] != e || m.shape[1] == 0)
    {
        return Some(format!(
            "strategy expert-wise: `{EXPERT_TASK_MASS}` must have shape [E, T] with E = {e}, got {:?}; {fix}",
            m.shape
        ));
    }
    let clients = find(EXPERT_CLIENTS);
    if let Some(c) = clients
        && c.shape != [e]
    {
        return Some(format!(
            "strategy expert-wise: `{EXPERT_CLIENTS}` must have shape [{e}], got {:?}; {fix}",
            c.shape
        ));
    }
    for w in [Some(experts), Some(shared), tasks, task_mass, clients]
        .into_iter()
        .flatten()
    {
        if w.data.iter().any(|&v| v != 0.0) {
            return Some(format!(
                "strategy expert-wise: `{}` must start at zero (clients send the global value plus their weight); {fix}",
                w.name
            ));
        }
    }
    None
}

/// The per-task weights read from a mean update, if it carries them.
fn task_weights(mean: &Parameters) -> Result<Option<Vec<f64>>> {
    let Some(t) = mean.tensors().iter().find(|t| t.name == TASK_WEIGHT) else {
        return Ok(None);
    };
    if t.shape.len() != 1 || t.data.is_empty() {
        return Err(malformed(format!(
            "`{TASK_WEIGHT}` has shape {:?}, not [T]",
            t.shape
        )));
    }
    Ok(Some(t.data.iter().map(|&v| f64::from(v)).collect()))
}

/// The report tensors read from a mean update, into `steps` (see the
/// module); a report of another shape is ignored, since it moves nothing.
fn read_reports(mean: &Parameters, steps: &mut [ExpertStep]) {
    let find = |n: &str| mean.tensors().iter().find(|t| t.name == n);
    let experts = steps.len();
    if let Some(m) = find(EXPERT_TASK_MASS)
        && m.shape.len() == 2
        && m.shape[0] == experts
        && m.shape[1] > 0
    {
        let tasks = m.shape[1];
        for (step, row) in steps.iter_mut().zip(m.data.chunks_exact(tasks)) {
            let total: f64 = row.iter().map(|&v| f64::from(v)).sum();
            step.task_share = if total.is_finite() && total > 0.0 {
                row.iter().map(|&v| f64::from(v) / total).collect()
            } else {
                vec![0.0; tasks]
            };
        }
    }
    if let Some(c) = find(EXPERT_CLIENTS)
        && c.data.len() == experts
    {
        for (step, &v) in steps.iter_mut().zip(&c.data) {
            step.client_share = Some(f64::from(v)).filter(|v| v.is_finite());
        }
    }
}

/// `(E, shared weight)` read from a mean update, checked.
fn weights(mean: &Parameters) -> Result<(Vec<f64>, f64)> {
    let find = |n: &str| mean.tensors().iter().find(|t| t.name == n);
    let experts = find(EXPERT_WEIGHT).ok_or_else(|| malformed(format!("no `{EXPERT_WEIGHT}`")))?;
    let shared = find(SHARED_WEIGHT).ok_or_else(|| malformed(format!("no `{SHARED_WEIGHT}`")))?;
    if experts.shape.len() != 1 || experts.data.is_empty() {
        return Err(malformed(format!(
            "`{EXPERT_WEIGHT}` has shape {:?}, not [E]",
            experts.shape
        )));
    }
    if shared.data.len() != 1 {
        return Err(malformed(format!(
            "`{SHARED_WEIGHT}` has shape {:?}, not [1]",
            shared.shape
        )));
    }
    Ok((
        experts.data.iter().map(|&v| f64::from(v)).collect(),
        f64::from(shared.data[0]),
    ))
}

impl Strategy for ExpertWise {
    fn name(&self) -> &'static str {
        "expert-wise"
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Parameters,
        available: &[AgentId],
        rng: &mut dyn RngCore,
    ) -> Result<TrainPlan> {
        self.sampling.configure_train(round, global, available, rng)
    }

    /// Uniform: the clients' own weights are inside their updates.
    fn expert_steps(&self) -> Vec<ExpertStep> {
        self.last.clone()
    }

    /// No: top-k would drop expert weights apart from what they weigh.
    fn takes_sparse_updates(&self) -> bool {
        false
    }

    fn fold_rule(&self) -> FoldRule {
        FoldRule {
            weighting: Weighting::Uniform,
            ..FoldRule::examples()
        }
    }

    fn apply(&mut self, _round: u32, global: &Parameters, fold: Fold) -> Result<Parameters> {
        let mean = fold.mean()?;
        let (expert_w, shared_w) = weights(&mean)?;
        let experts = expert_w.len();
        let floor = MIN_EXPERT_SHARE.min(0.1 / experts as f64);
        if !(shared_w > 0.0 && shared_w.is_finite()) {
            return Err(StrategyError::Rejected(format!(
                "expert-wise aggregation: the round's shared weight is {shared_w}; nothing to average"
            )));
        }
        let mut steps: Vec<ExpertStep> = expert_w
            .iter()
            .map(|&w| {
                let share = w / shared_w;
                ExpertStep {
                    weight: w,
                    share,
                    updated: share.is_finite() && share >= floor,
                    step_norm: 0.0,
                    task_share: Vec::new(),
                    client_share: None,
                }
            })
            .collect();
        read_reports(&mean, &mut steps);
        let lr = f64::from(self.server_lr);
        // Per task: its weight, if it has enough of the round's to average
        // (the experts' floor, for the same reason).
        let task_w: Vec<Option<f64>> = task_weights(&mean)?
            .map(|w| {
                let floor = MIN_EXPERT_SHARE.min(0.1 / w.len() as f64);
                w.iter()
                    .map(|&w| {
                        let share = w / shared_w;
                        (share.is_finite() && share >= floor).then_some(w)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut sq = vec![0f64; experts];
        let mut tensors = global.tensors().to_vec();
        for (t, m) in tensors.iter_mut().zip(mean.tensors()) {
            if is_weight_or_report(&t.name) {
                continue; // The global model's weights and reports stay as they were (zero).
            }
            let split = is_per_expert(&t.name, &t.shape, experts);
            if !split && is_per_task(&t.name, &t.shape, task_w.len()) {
                let per = t.data.len() / task_w.len();
                for (row, w) in task_w.iter().enumerate() {
                    let Some(w) = w else { continue };
                    let range = row * per..(row + 1) * per;
                    for (v, &d) in t.data[range.clone()].iter_mut().zip(&m.data[range]) {
                        *v += (lr * f64::from(d) / w) as f32;
                    }
                }
                continue;
            }
            if !split {
                for (v, &d) in t.data.iter_mut().zip(&m.data) {
                    *v += (lr * f64::from(d) / shared_w) as f32;
                }
                continue;
            }
            let per = t.data.len() / experts;
            for (e, step) in steps.iter().enumerate() {
                if !step.updated {
                    continue;
                }
                let range = e * per..(e + 1) * per;
                for (v, &d) in t.data[range.clone()].iter_mut().zip(&m.data[range]) {
                    let s = lr * f64::from(d) / step.weight;
                    sq[e] += s * s;
                    *v += s as f32;
                }
            }
        }
        for (step, s) in steps.iter_mut().zip(sq) {
            step.step_norm = s.sqrt();
        }
        let next = Parameters::new(tensors)?;
        if !next.all_finite() {
            return Err(StrategyError::Rejected(
                "expert-wise aggregation produced NaN or infinite values".into(),
            ));
        }
        self.last = steps;
        Ok(next)
    }
}

#[cfg(test)]
mod tests;
