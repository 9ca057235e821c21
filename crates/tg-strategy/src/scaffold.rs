//! SCAFFOLD (Karimireddy et al. 2020).

use rand::RngCore;
use tg_types::spec::LocalObjective;
use tg_types::{AgentId, Parameters};

use crate::{ClientUpdate, Result, Sampler, Strategy, StrategyError, TrainPlan, mean_update};

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

    fn aggregate_train(
        &mut self,
        _round: u32,
        global: &Parameters,
        results: &[ClientUpdate],
    ) -> Result<Parameters> {
        let avg = mean_update(results)?;
        let control = self.control.get_or_insert_with(|| global.zeros_like());
        let scale = 1.0 / self.population as f32;
        for r in results {
            let dc = r
                .control_delta
                .as_ref()
                .ok_or_else(|| StrategyError::MissingField {
                    agent: r.agent.clone(),
                    what: "SCAFFOLD control delta",
                })?;
            control.add_scaled(dc, scale)?;
        }
        let mut next = global.clone();
        next.add_scaled(&avg, self.server_lr)?;
        Ok(next)
    }
}
