//! From a planned job to what the coordinator runs: its strategy, its
//! evaluator and its run configuration — one rule for every runner (the
//! in-process simulation and a fleet), so that both run the same job.

use std::collections::BTreeMap;
use std::time::Duration;

use tg_model::net::ModelShape;
use tg_model::{Evaluation, LocalData, ModelError, evaluate};
use tg_privacy::NoiseRng;
use tg_strategy::{Sampler, Strategy};
use tg_types::privacy::DpMode;
use tg_types::spec::JobSpec;
use tg_types::{AgentId, JobId, Parameters};

use crate::{Evaluator, Result, RunConfig, SecureSettings};

/// Where a job's server-side randomness (DP noise, Poisson client
/// sampling) comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoiseSource {
    /// The operating system's CSPRNG: the only private choice.
    Os,
    /// SIMULATION: a public seed, so that runs reproduce. Not private;
    /// runners label it and production policy refuses it.
    Simulated(u64),
}

impl NoiseSource {
    fn rng(self) -> Result<NoiseRng> {
        Ok(match self {
            NoiseSource::Os => NoiseRng::from_os()?,
            NoiseSource::Simulated(seed) => NoiseRng::simulated(seed),
        })
    }
}

/// The server strategy of a job: its aggregation rule, client sampling and,
/// for central DP, the noise.
pub fn build_strategy(spec: &JobSpec, noise: NoiseSource) -> Result<Box<dyn Strategy>> {
    let strategy: Box<dyn Strategy> = match spec.privacy.map(|p| p.mode) {
        Some(DpMode::Distributed(d)) => {
            // Poisson sampling from the CSPRNG at rate q, no server-side
            // noise: the clients add it.
            let inner =
                tg_strategy::build(&spec.strategy, Sampler::new(1.0, 1)?, spec.clients as usize)?;
            Box::new(tg_strategy::PoissonSampled::new(
                inner,
                d.client_sampling_rate,
                noise.rng()?,
            ))
        }
        Some(DpMode::Central(central)) => {
            tg_strategy::build_central_dp(&spec.strategy, central, noise.rng()?)?
        }
        _ => {
            let sampler = Sampler::new(spec.fraction, spec.min_clients as usize)?;
            tg_strategy::build(&spec.strategy, sampler, spec.clients as usize)?
        }
    };
    // A robust rule wraps the optimizer (JobSpec::check has refused it with
    // DP, secure aggregation, SCAFFOLD and expert-wise).
    Ok(match spec.robust {
        Some(r) => Box::new(tg_strategy::Robust::new(strategy, r)?),
        None => strategy,
    })
}

/// Where and how long a job's stages may take.
#[derive(Clone, Copy, Debug)]
pub struct Stages {
    /// Local training and the first upload of a round.
    pub train: Duration,
    /// Each later secure-aggregation stage.
    pub stage: Duration,
}

impl RunConfig {
    /// The run of `spec` (a planned job) as job `job` of kind `kind`
    /// (`demo`, `fleet`). `identities` are the agents' keys when the runner
    /// knows them up front (a fleet learns them at admission).
    pub fn for_job(
        job: JobId,
        kind: &str,
        spec: &JobSpec,
        stages: Stages,
        identities: BTreeMap<AgentId, [u8; 32]>,
        prg: tg_secagg::crypto::Prg,
    ) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        RunConfig {
            job,
            kind: kind.into(),
            spec_json: serde_json::to_value(spec).unwrap_or(serde_json::Value::Null),
            rounds: spec.rounds,
            min_results: spec.min_clients as usize,
            round_deadline: stages.train,
            stage_deadline: stages.stage,
            train: spec.train,
            seed: spec.seed,
            privacy: spec.privacy,
            evaluate_every: spec.evaluate_every,
            // Its settings are checked with the spec (`JobSpec::check`).
            reputation: spec.reputation,
            sealing: None,
            byzantine: spec.robust.map_or(0, |r| r.f),
            gate: spec.gate.map(|g| tg_strategy::RolloutGate {
                margin: g.margin,
                min_episodes: g.min_episodes,
            }),
            secure: spec.secure_aggregation.map(|s| SecureSettings {
                spec: s,
                identities,
                threads,
                prg,
                noise: match spec.privacy.map(|p| p.mode) {
                    Some(DpMode::Distributed(d)) => Some(d),
                    _ => None,
                },
                // FedAvg weights by examples unless DP keeps the counts
                // private; expert-wise clients weight their own updates.
                weight_scale: (spec.privacy.is_none()
                    && spec.strategy.kind != tg_types::spec::StrategyKind::ExpertWise)
                    .then(|| s.weight_scale.unwrap_or(1.0)),
            }),
        }
    }
}

/// Evaluation of candidate models on the coordinator's held-out data (the
/// evaluation gate).
pub struct HeldOut {
    shape: ModelShape,
    test: LocalData,
}

impl HeldOut {
    /// Evaluates models of `shape` on `test`.
    pub fn new(shape: ModelShape, test: &tg_model::Dataset) -> Result<Self, ModelError> {
        Ok(Self {
            shape,
            test: LocalData::new(test)?,
        })
    }
}

impl Evaluator for HeldOut {
    fn evaluate(&mut self, params: &Parameters) -> Result<Option<Evaluation>, ModelError> {
        evaluate(&self.shape, params, &self.test).map(Some)
    }
}

/// A coordinator that holds no test data (the model is the user's own, as
/// from the Python SDK): rounds commit when the aggregate is finite, and
/// report no loss or accuracy of their own.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHeldOut;

impl Evaluator for NoHeldOut {
    fn evaluate(&mut self, _: &Parameters) -> Result<Option<Evaluation>, ModelError> {
        Ok(None)
    }
}
