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
    for w in [Some(experts), Some(shared), tasks].into_iter().flatten() {
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
                }
            })
            .collect();
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
            if t.name == EXPERT_WEIGHT || t.name == SHARED_WEIGHT || t.name == TASK_WEIGHT {
                continue; // The global model's weights stay as they were (zero).
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
mod tests {
    use super::*;
    use crate::ClientUpdate;
    use tg_types::NamedTensor;

    fn t(name: &str, shape: Vec<usize>, data: Vec<f32>) -> NamedTensor {
        NamedTensor {
            name: name.into(),
            shape,
            data,
        }
    }

    /// Two experts of two values each, a shared scalar, and the weights.
    fn model(b: [f32; 4], router: f32, ew: [f32; 2], sw: f32) -> Parameters {
        Parameters::new(vec![
            t("layers.0.lora_B", vec![2, 2], b.to_vec()),
            t("router.logits", vec![1], vec![router]),
            t(EXPERT_WEIGHT, vec![2], ew.to_vec()),
            t(SHARED_WEIGHT, vec![1], vec![sw]),
        ])
        .unwrap()
    }

    fn update(n: usize, p: Parameters) -> ClientUpdate {
        ClientUpdate {
            agent: AgentId::numbered(n),
            update: p,
            num_examples: 1,
            control_delta: None,
        }
    }

    fn strategy() -> ExpertWise {
        ExpertWise::new(Sampler::new(1.0, 1).unwrap(), 1.0)
    }

    #[test]
    fn each_expert_moves_by_the_weighted_mean_of_the_clients_that_used_it() {
        let global = model([1.0; 4], 0.0, [0.0; 2], 0.0);
        // Client 1 (3 examples) used only expert 0, Δ = +1; client 2
        // (1 example) both experts equally, Δ = −1 everywhere.
        let c1 = model([3.0, 3.0, 0.0, 0.0], 3.0 * 0.5, [3.0, 0.0], 3.0);
        let c2 = model([-0.5, -0.5, -0.5, -0.5], -1.0, [0.5, 0.5], 1.0);
        let mut s = strategy();
        let next = s
            .aggregate_train(1, &global, &[update(1, c1), update(2, c2)])
            .unwrap();
        let v: Vec<f32> = next.values().collect();
        // Expert 0: (3 − 0.5) / 3.5; expert 1: −0.5 / 0.5 = −1.
        let e0 = 1.0 + 2.5 / 3.5;
        assert!(
            (v[0] - e0).abs() < 1e-5 && (v[1] - e0).abs() < 1e-5,
            "{v:?}"
        );
        assert!((v[2] - 0.0).abs() < 1e-5 && (v[3] - 0.0).abs() < 1e-5);
        // The router: (1.5 − 1) / 4 shared weight.
        assert!((v[4] - 0.125).abs() < 1e-6);
        // The weights stay zero in the global model.
        assert_eq!(&v[5..], &[0.0, 0.0, 0.0]);
        assert!(s.last_round().iter().all(|e| e.updated));
    }

    #[test]
    fn the_sum_alone_gives_the_same_model_as_the_individual_updates() {
        // What secure aggregation reveals: one mean update. The ratio is
        // the same, whatever the divisor.
        let global = model([0.5; 4], 0.2, [0.0; 2], 0.0);
        let c1 = model([0.2, -0.1, 0.0, 0.0], 0.3, [2.0, 0.0], 2.0);
        let c2 = model([0.1, 0.1, 0.4, 0.4], -0.2, [1.0, 1.0], 2.0);
        let c3 = model([0.0, 0.0, -0.3, 0.6], 0.1, [0.0, 3.0], 3.0);
        let each = strategy()
            .aggregate_train(
                1,
                &global,
                &[
                    update(1, c1.clone()),
                    update(2, c2.clone()),
                    update(3, c3.clone()),
                ],
            )
            .unwrap();
        let mut sum = c1;
        sum.add_scaled(&c2, 1.0).unwrap();
        sum.add_scaled(&c3, 1.0).unwrap();
        sum.scale(1.0 / 7.0); // any divisor: survivors, or qN under DP
        let once = strategy()
            .aggregate_train(1, &global, &[update(1, sum)])
            .unwrap();
        for (a, b) in each.values().zip(once.values()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn an_expert_nobody_used_stays_and_a_model_without_weights_is_refused() {
        let global = model([1.0; 4], 0.0, [0.0; 2], 0.0);
        let c = model([2.0, 2.0, 5.0, 5.0], 0.0, [2.0, 0.0], 2.0);
        let mut s = strategy();
        let next = s.aggregate_train(1, &global, &[update(1, c)]).unwrap();
        let v: Vec<f32> = next.values().collect();
        assert_eq!(&v[..4], &[2.0, 2.0, 1.0, 1.0]);
        assert!(!s.last_round()[1].updated);
        let plain = Parameters::new(vec![t("w", vec![1], vec![0.0])]).unwrap();
        let e = strategy()
            .aggregate_train(1, &plain, &[update(1, plain.clone())])
            .unwrap_err();
        assert!(e.to_string().contains(EXPERT_WEIGHT), "{e}");
        let zero = model([0.0; 4], 0.0, [0.0; 2], 0.0);
        let e = strategy()
            .aggregate_train(1, &global, &[update(1, zero)])
            .unwrap_err();
        assert!(matches!(e, StrategyError::Rejected(_)), "{e}");
    }

    #[test]
    fn a_model_that_cannot_start_an_expert_wise_federation_is_refused() {
        let ok = |extra: Vec<NamedTensor>| {
            let mut v = vec![
                t("layers.0.lora_B", vec![2, 1], vec![0.0, 0.0]),
                t("router.logits", vec![3, 2], vec![0.0; 6]),
                t(EXPERT_WEIGHT, vec![2], vec![0.0, 0.0]),
                t(SHARED_WEIGHT, vec![1], vec![0.0]),
            ];
            v.extend(extra);
            Parameters::new(v).unwrap()
        };
        assert_eq!(initial_model_refusal(&ok(vec![])), None);
        assert_eq!(
            initial_model_refusal(&ok(vec![t(TASK_WEIGHT, vec![3], vec![0.0; 3])])),
            None
        );
        for (bad, says) in [
            (t(TASK_WEIGHT, vec![1, 3], vec![0.0; 3]), "shape [T]"),
            // Four tasks, but the router has three rows: nothing per-task.
            (
                t(TASK_WEIGHT, vec![4], vec![0.0; 4]),
                "no tensor is per-task",
            ),
            (
                t(TASK_WEIGHT, vec![3], vec![0.0, 1e8, 0.0]),
                "start at zero",
            ),
        ] {
            let why = initial_model_refusal(&ok(vec![bad])).unwrap();
            assert!(why.contains(says), "{why}");
        }
        let mut nonzero = ok(vec![]).tensors().to_vec();
        nonzero[3].data[0] = 2.0;
        let why = initial_model_refusal(&Parameters::new(nonzero).unwrap()).unwrap();
        assert!(why.contains(SHARED_WEIGHT) && why.contains("zero"), "{why}");
        let plain = Parameters::new(vec![t("w", vec![1], vec![0.0])]).unwrap();
        assert!(
            initial_model_refusal(&plain)
                .unwrap()
                .contains(EXPERT_WEIGHT)
        );
    }

    #[test]
    fn a_task_row_moves_by_the_mean_of_the_clients_that_have_the_task() {
        // Two tasks' router rows of two logits; one expert of one value.
        let m = |rows: [f32; 4], tw: [f32; 2], sw: f32| {
            Parameters::new(vec![
                t("layers.0.lora_B", vec![1, 1], vec![0.0]),
                t("router.logits", vec![2, 2], rows.to_vec()),
                t("task_embed.weight", vec![2, 1], vec![rows[0], rows[2]]),
                t(EXPERT_WEIGHT, vec![1], vec![0.0]),
                t(SHARED_WEIGHT, vec![1], vec![sw]),
                t(TASK_WEIGHT, vec![2], tw.to_vec()),
            ])
            .unwrap()
        };
        let global = m([0.0; 4], [0.0; 2], 0.0);
        // Client 1 has only task 0 (4 examples, Δ = +1 on its row); client
        // 2 only task 1 (1 example, Δ = −2); client 3 both (2 + 2, Δ = +1
        // on both rows). Row 0: (4 + 2) / 6 = 1; row 1: (−2 + 2) / 3 = 0.
        let c1 = m([4.0, 4.0, 0.0, 0.0], [4.0, 0.0], 4.0);
        let c2 = m([0.0, 0.0, -2.0, -2.0], [0.0, 1.0], 1.0);
        let c3 = m([2.0, 2.0, 2.0, 2.0], [2.0, 2.0], 4.0);
        let next = strategy()
            .aggregate_train(1, &global, &[update(1, c1), update(2, c2), update(3, c3)])
            .unwrap();
        let v: Vec<f32> = next.values().collect();
        assert!(
            (v[1] - 1.0).abs() < 1e-5 && (v[2] - 1.0).abs() < 1e-5,
            "{v:?}"
        );
        assert!(v[3].abs() < 1e-5 && v[4].abs() < 1e-5, "{v:?}");
        assert!((v[5] - 1.0).abs() < 1e-5 && v[6].abs() < 1e-5, "{v:?}");
        // A task nobody had stays; a TASK_WEIGHT of another shape is refused.
        let only0 = m([4.0, 4.0, 0.0, 0.0], [4.0, 0.0], 4.0);
        let next = strategy()
            .aggregate_train(1, &global, &[update(1, only0)])
            .unwrap();
        let v: Vec<f32> = next.values().collect();
        assert_eq!(&v[1..5], &[1.0, 1.0, 0.0, 0.0]);
        // A task under the floor (here 0.5 % of the shared weight) is left
        // as it was, not moved by a ratio with a near-zero denominator.
        let tiny = m([4.0, 4.0, 0.01, 0.01], [4.0, 0.02], 4.0);
        let next = strategy()
            .aggregate_train(1, &global, &[update(1, tiny)])
            .unwrap();
        let v: Vec<f32> = next.values().collect();
        assert_eq!(&v[1..5], &[1.0, 1.0, 0.0, 0.0]);
        // The sum alone (what secure aggregation reveals) gives the same
        // rows as the individual updates, whatever the divisor.
        let c1 = m([2.0, 1.0, 0.0, 0.0], [2.0, 0.0], 2.0);
        let c2 = m([0.5, 0.5, -3.0, 1.5], [1.0, 3.0], 4.0);
        let each = strategy()
            .aggregate_train(1, &global, &[update(1, c1.clone()), update(2, c2.clone())])
            .unwrap();
        let mut sum = c1;
        sum.add_scaled(&c2, 1.0).unwrap();
        sum.scale(1.0 / 5.0);
        let once = strategy()
            .aggregate_train(1, &global, &[update(1, sum)])
            .unwrap();
        for (a, b) in each.values().zip(once.values()) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let bad = Parameters::new(vec![
            t("layers.0.lora_B", vec![1, 1], vec![0.0]),
            t(EXPERT_WEIGHT, vec![1], vec![0.0]),
            t(SHARED_WEIGHT, vec![1], vec![1.0]),
            t(TASK_WEIGHT, vec![1, 2], vec![1.0, 1.0]),
        ])
        .unwrap();
        let e = strategy()
            .aggregate_train(1, &bad, &[update(1, bad.clone())])
            .unwrap_err();
        assert!(e.to_string().contains(TASK_WEIGHT), "{e}");
    }
}
