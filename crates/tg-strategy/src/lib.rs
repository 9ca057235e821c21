//! Federated aggregation strategies.
//!
//! Design decision: a [`Strategy`] is short-lived *policy* in the spirit of
//! Flower's: it decides who trains and with which local objective
//! ([`Strategy::configure_train`]) and how results become the next global model
//! ([`Strategy::fold_rule`], [`Strategy::apply`]). The coordinator owns the
//! *mechanism* (messaging, deadlines, quorum, storage). Strategies see only
//! model *updates* (`local − global`), never data, so the same code later
//! aggregates the sum that secure aggregation reveals. Updates stream: each is
//! folded into an exact [`Fold`] as it arrives, so memory is O(model), not
//! O(clients × model), and the result is the same in any arrival order.

mod acc;
mod central_dp;
mod expert_wise;
mod fedadam;
mod fedavg;
mod fold;
mod gate;
mod poisson;
mod robust;
mod robust_rules;
mod sampling;
mod scaffold;

pub use central_dp::CentralDp;
pub use expert_wise::{
    EXPERT_CLIENTS, EXPERT_TASK_MASS, EXPERT_WEIGHT, ExpertStep, ExpertWise, MIN_EXPERT_SHARE,
    SHARED_WEIGHT, TASK_WEIGHT, initial_model_refusal, is_per_expert, is_per_task,
};
pub use fedadam::FedAdam;
pub use fedavg::FedAvg;
pub use fold::{Fold, FoldRule, Kept, Weighting};
pub use gate::{GateVerdict, RolloutGate, Successes, newcombe, wilson};
pub use poisson::PoissonSampled;
pub use robust::{Robust, Screened};
pub use sampling::Sampler;
pub use scaffold::Scaffold;

use rand::RngCore;
use tg_types::spec::{LocalObjective, StrategyConfig, StrategyKind};
use tg_types::{AgentId, Parameters, ParamsError};

/// Errors from strategies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// Fewer agents are available than the quorum requires.
    #[error("{available} agents available, quorum needs {required}")]
    BelowQuorum {
        /// Agents available.
        available: usize,
        /// Quorum.
        required: usize,
    },
    /// Aggregation was asked to combine nothing.
    #[error("no results to aggregate")]
    NoResults,
    /// Every result carried zero examples.
    #[error("results carry zero examples in total")]
    ZeroWeight,
    /// A result lacks data the strategy needs (e.g. SCAFFOLD's control delta).
    #[error("result from {agent} is missing {what}")]
    MissingField {
        /// Agent.
        agent: AgentId,
        /// What is missing.
        what: &'static str,
    },
    /// Invalid configuration.
    #[error("invalid strategy configuration: {0}")]
    Config(String),
    /// The strategy could not aggregate this round (a user's strategy
    /// raised, or returned an unusable model): the round fails and the
    /// job goes on.
    #[error("{0}")]
    Rejected(String),
    /// Parameter layouts disagree.
    #[error(transparent)]
    Params(#[from] ParamsError),
}

/// Result alias for this crate.
pub type Result<T, E = StrategyError> = std::result::Result<T, E>;

/// One client's training result as a strategy sees it.
#[derive(Clone, Debug)]
pub struct ClientUpdate {
    /// Agent.
    pub agent: AgentId,
    /// `local − global`.
    pub update: Parameters,
    /// Local examples (the FedAvg weight).
    pub num_examples: u64,
    /// SCAFFOLD control-variate change.
    pub control_delta: Option<Parameters>,
}

/// One client's evaluation result.
#[derive(Clone, Copy, Debug)]
pub struct ClientEvaluation {
    /// Examples evaluated.
    pub num_examples: u64,
    /// Mean loss.
    pub loss: f64,
    /// Accuracy.
    pub accuracy: f64,
}

/// What to ask of whom in a training round.
#[derive(Clone, Debug)]
pub struct TrainPlan {
    /// Agents selected for this round.
    pub selected: Vec<AgentId>,
    /// Local objective every selected agent uses.
    pub objective: LocalObjective,
}

/// A federated optimisation strategy.
pub trait Strategy: Send {
    /// Short name (`fedavg`, …).
    fn name(&self) -> &'static str;

    /// Chooses participants and the local objective for `round`.
    fn configure_train(
        &mut self,
        round: u32,
        global: &Parameters,
        available: &[AgentId],
        rng: &mut dyn RngCore,
    ) -> Result<TrainPlan>;

    /// How each update is folded into the round's sum as it arrives
    /// (example-weighted and unclipped unless the strategy says otherwise).
    fn fold_rule(&self) -> FoldRule {
        FoldRule::examples()
    }

    /// Turns the round's folded updates into the next global model.
    fn apply(&mut self, round: u32, global: &Parameters, fold: Fold) -> Result<Parameters>;

    /// Whether an update may arrive top-k sparsified when an agent fits it
    /// to its owner's byte envelope (plaintext rounds): yes, unless the
    /// strategy keeps whole updates or needs every coordinate of each.
    fn takes_sparse_updates(&self) -> bool {
        !self.fold_rule().keep
    }

    /// What the last `apply` did to each expert (expert-wise aggregation;
    /// empty for strategies without experts).
    fn expert_steps(&self) -> Vec<tg_types::record::ExpertStep> {
        Vec::new()
    }

    /// How the last `apply`'s robust rule judged each update (its score and
    /// whether it was admitted); empty without a robust rule.
    fn screened(&self) -> Vec<Screened> {
        Vec::new()
    }

    /// Sets agents' example weights for the next `apply` (reputation's
    /// down-weighting: each listed agent's example count is multiplied by
    /// its weight in (0, 1]). Only a robust rule, which sees each update,
    /// can apply them; others ignore them.
    fn reweigh(&mut self, _weights: &std::collections::BTreeMap<AgentId, f64>) {}

    /// Folds `results` (in any order: the sum is exact) and applies them.
    fn aggregate_train(
        &mut self,
        round: u32,
        global: &Parameters,
        results: &[ClientUpdate],
    ) -> Result<Parameters> {
        let mut fold = Fold::new(self.fold_rule(), global, results.len());
        for r in results {
            fold.add(r)?;
        }
        self.apply(round, global, fold)
    }

    /// Chooses agents for a federated evaluation the job scheduled (every
    /// available agent by default, in a canonical order).
    fn configure_evaluate(&mut self, _round: u32, available: &[AgentId]) -> Vec<AgentId> {
        let mut all = available.to_vec();
        all.sort();
        all.dedup();
        all
    }

    /// Combines federated evaluations: example-weighted means of loss and accuracy.
    fn aggregate_evaluate(&mut self, results: &[ClientEvaluation]) -> Option<ClientEvaluation> {
        // Counts are self-reported: summed without overflow, whatever they
        // claim, and each answer weighs its share (≤ 1) of the total, so a
        // huge count or loss cannot overflow a product; a mean that is still
        // not finite (losses near f64::MAX) is no mean at all.
        let n: u128 = results.iter().map(|r| u128::from(r.num_examples)).sum();
        if n == 0 {
            return None;
        }
        let w = |f: fn(&ClientEvaluation) -> f64| {
            results
                .iter()
                .map(|r| f(r) * (r.num_examples as f64 / n as f64))
                .sum::<f64>()
        };
        let (loss, accuracy) = (w(|r| r.loss), w(|r| r.accuracy));
        (loss.is_finite() && accuracy.is_finite()).then(|| ClientEvaluation {
            num_examples: u64::try_from(n).unwrap_or(u64::MAX),
            loss,
            accuracy,
        })
    }
}

/// Builds the strategy described by `config` for a population of `population`
/// agents sampled by `sampler`.
pub fn build(
    config: &StrategyConfig,
    sampler: Sampler,
    population: usize,
) -> Result<Box<dyn Strategy>> {
    if !(config.server_lr > 0.0 && config.server_lr.is_finite()) {
        return Err(StrategyError::Config(format!(
            "server learning rate must be positive, got {}",
            config.server_lr
        )));
    }
    Ok(match config.kind {
        StrategyKind::FedAvg => Box::new(FedAvg::new(sampler, config.server_lr)),
        StrategyKind::FedProx => {
            if !(config.proximal_mu >= 0.0 && config.proximal_mu.is_finite()) {
                return Err(StrategyError::Config(format!(
                    "FedProx μ must be ≥ 0, got {}",
                    config.proximal_mu
                )));
            }
            Box::new(FedAvg::new(sampler, config.server_lr).with_proximal(config.proximal_mu))
        }
        StrategyKind::Scaffold => Box::new(Scaffold::new(sampler, config.server_lr, population)),
        StrategyKind::FedAdam => Box::new(FedAdam::new(sampler, *config)?),
        StrategyKind::ExpertWise => Box::new(ExpertWise::new(sampler, config.server_lr)),
        other => {
            return Err(StrategyError::Config(format!(
                "strategy {other} is not supported by this build"
            )));
        }
    })
}

/// Builds user-level DP-FedAvg (see [`CentralDp`]) with the server optimizer
/// of `config`. SCAFFOLD is refused: its control variates would leave every
/// client un-noised.
pub fn build_central_dp(
    config: &StrategyConfig,
    spec: tg_types::privacy::CentralDpSpec,
    noise: tg_privacy::NoiseRng,
) -> Result<Box<dyn Strategy>> {
    if config.kind == StrategyKind::Scaffold {
        return Err(StrategyError::Config(
            "SCAFFOLD cannot run under central DP: its control variates are per-client and un-noised; \
             use fedavg, fedprox or fedadam"
                .into(),
        ));
    }
    // The inner optimizer sees one (noised) update per round; it selects nobody itself.
    let inner = build(config, Sampler::new(1.0, 1)?, spec.population as usize)?;
    Ok(Box::new(CentralDp::new(inner, spec, noise)?))
}
