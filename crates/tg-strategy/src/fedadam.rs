//! FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization").

use rand::RngCore;
use tg_types::spec::{LocalObjective, StrategyConfig};
use tg_types::{AgentId, Parameters};

use crate::{Fold, Result, Sampler, Strategy, StrategyError, TrainPlan};

/// Server-side Adam on the averaged update Δ (the negative pseudo-gradient):
/// `m ← β₁m + (1−β₁)Δ`, `v ← β₂v + (1−β₂)Δ²`, `x ← x + η·m/(√v + τ)`.
#[derive(Debug)]
pub struct FedAdam {
    sampler: Sampler,
    eta: f32,
    beta1: f32,
    beta2: f32,
    tau: f32,
    m: Option<Parameters>,
    v: Option<Parameters>,
}

impl FedAdam {
    /// FedAdam with η = `server_lr`, β₁, β₂, τ from `config`.
    pub fn new(sampler: Sampler, config: StrategyConfig) -> Result<Self> {
        let ok = |b: f32| (0.0..1.0).contains(&b);
        if !ok(config.beta1) || !ok(config.beta2) || !(config.tau > 0.0) {
            return Err(StrategyError::Config(format!(
                "FedAdam needs 0 ≤ β₁, β₂ < 1 and τ > 0; got β₁={}, β₂={}, τ={}",
                config.beta1, config.beta2, config.tau
            )));
        }
        Ok(Self {
            sampler,
            eta: config.server_lr,
            beta1: config.beta1,
            beta2: config.beta2,
            tau: config.tau,
            m: None,
            v: None,
        })
    }
}

impl Strategy for FedAdam {
    fn name(&self) -> &'static str {
        "fedadam"
    }

    fn configure_train(
        &mut self,
        _round: u32,
        _global: &Parameters,
        available: &[AgentId],
        rng: &mut dyn RngCore,
    ) -> Result<TrainPlan> {
        Ok(TrainPlan {
            selected: self.sampler.sample(available, rng)?,
            objective: LocalObjective::Plain,
        })
    }

    fn apply(&mut self, _round: u32, global: &Parameters, fold: Fold) -> Result<Parameters> {
        let delta = fold.mean()?;
        let (b1, b2) = (self.beta1, self.beta2);
        let m = self.m.get_or_insert_with(|| delta.zeros_like());
        m.zip_apply(&delta, |m, d| *m = b1 * *m + (1.0 - b1) * d)?;
        let v = self.v.get_or_insert_with(|| delta.zeros_like());
        v.zip_apply(&delta, |v, d| *v = b2 * *v + (1.0 - b2) * d * d)?;
        let mut step = m.clone();
        let tau = self.tau;
        step.zip_apply(v, |s, v| *s /= v.sqrt() + tau)?;
        let mut next = global.clone();
        next.add_scaled(&step, self.eta)?;
        Ok(next)
    }
}
