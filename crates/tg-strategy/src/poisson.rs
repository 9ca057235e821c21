//! Poisson client sampling from a CSPRNG, around any strategy.
//!
//! Design decision: DP accounting by subsampling assumes each client joins a
//! round independently with probability q and that nobody can predict who —
//! so the draw comes from the OS-seeded [`NoiseRng`], not the job's seeded
//! RNG. Used by distributed DP, where the noise is added by the clients and
//! the server strategy aggregates as usual.

use rand::RngCore;
use tg_privacy::{NoiseRng, SamplingRate};
use tg_types::{AgentId, Parameters};

use crate::{Fold, FoldRule, Result, Strategy, StrategyError, TrainPlan};

/// Each available client with probability `q` (drawn from `noise`), then
/// `inner`'s local objective for them.
pub(crate) fn poisson_plan(
    inner: &mut dyn Strategy,
    round: u32,
    global: &Parameters,
    available: &[AgentId],
    q: f64,
    noise: &mut NoiseRng,
    rng: &mut dyn RngCore,
) -> Result<TrainPlan> {
    let selected: Vec<AgentId> = available
        .iter()
        .filter(|_| noise.bernoulli_rate(q))
        .cloned()
        .collect();
    if selected.is_empty() {
        return Err(StrategyError::BelowQuorum {
            available: 0,
            required: 1,
        });
    }
    let plan = inner.configure_train(round, global, &selected, rng)?;
    Ok(TrainPlan {
        selected,
        objective: plan.objective,
    })
}

/// Samples each available client with probability q, then defers to `inner`.
pub struct PoissonSampled {
    inner: Box<dyn Strategy>,
    rate: SamplingRate,
    rng: NoiseRng,
}

impl PoissonSampled {
    /// Wraps `inner`, which should select everyone it is offered.
    pub fn new(inner: Box<dyn Strategy>, rate: SamplingRate, rng: NoiseRng) -> Self {
        Self { inner, rate, rng }
    }
}

impl Strategy for PoissonSampled {
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
        poisson_plan(
            self.inner.as_mut(),
            round,
            global,
            available,
            self.rate.get(),
            &mut self.rng,
            rng,
        )
    }

    fn fold_rule(&self) -> FoldRule {
        self.inner.fold_rule()
    }

    fn expert_steps(&self) -> Vec<tg_types::record::ExpertStep> {
        self.inner.expert_steps()
    }

    fn takes_sparse_updates(&self) -> bool {
        self.inner.takes_sparse_updates()
    }

    fn apply(&mut self, round: u32, global: &Parameters, fold: Fold) -> Result<Parameters> {
        self.inner.apply(round, global, fold)
    }
}
