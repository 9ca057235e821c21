//! SCAFFOLD (Karimireddy et al. 2020).

use rand::RngCore;
use tg_types::spec::LocalObjective;
use tg_types::{AgentId, Parameters};

use crate::{Fold, FoldRule, Result, Sampler, Strategy, TrainPlan, Weighting};

/// Keeps the server control variate `c`; clients keep their own `c_i` and
/// correct each local gradient by `c − c_i`. Server update:
/// `x ← x + η_g · mean(Δyᵢ)`, `c ← c + (1/N) Σ Δcᵢ`.
#[derive(Debug)]
pub struct Scaffold {
    sampler: Sampler,
    server_lr: f32,
    population: usize,
    control: Option<Parameters>,
}

impl Scaffold {
    /// SCAFFOLD over a population of `population` clients.
    pub fn new(sampler: Sampler, server_lr: f32, population: usize) -> Self {
        Self {
            sampler,
            server_lr,
            population: population.max(1),
            control: None,
        }
    }

    /// The server control variate (zero before the first round).
    pub fn control(&self) -> Option<&Parameters> {
        self.control.as_ref()
    }
}

impl Strategy for Scaffold {
    /// No: its control-variate change travels dense beside the update, and
    /// would no longer match a sparsified one.
    fn takes_sparse_updates(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "scaffold"
    }

    fn configure_train(
        &mut self,
        _round: u32,
        global: &Parameters,
        available: &[AgentId],
        rng: &mut dyn RngCore,
    ) -> Result<TrainPlan> {
        let control = self
            .control
            .get_or_insert_with(|| global.zeros_like())
            .clone();
        Ok(TrainPlan {
            selected: self.sampler.sample(available, rng)?,
            objective: LocalObjective::Scaffold {
                server_control: control,
            },
        })
    }

    fn fold_rule(&self) -> FoldRule {
        FoldRule {
            weighting: Weighting::Uniform,
            clip: None,
            control: true,
            keep: false,
        }
    }

    fn apply(&mut self, _round: u32, global: &Parameters, fold: Fold) -> Result<Parameters> {
        let avg = fold.mean()?;
        let control = self.control.get_or_insert_with(|| global.zeros_like());
        if let Some(step) = fold.control_scaled(self.population as f64)? {
            control.add_scaled(&step, 1.0)?;
        }
        let mut next = global.clone();
        next.add_scaled(&avg, self.server_lr)?;
        Ok(next)
    }
}
