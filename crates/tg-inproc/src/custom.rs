//! A federation of learners the caller brings (the Python SDK's clients):
//! the same agents, engine, frames and store as the demo, with the
//! caller's model and training code instead of the bundled dataset's.

use std::time::Duration;

use tg_agent::{Agent, Learner};
use tg_coordinator::runner::Finished;
use tg_coordinator::{Evaluator, StopSignal};
use tg_store::Store;
use tg_types::record::RoundRecord;
use tg_types::spec::{LocalObjective, StrategyKind};
use tg_types::{AgentId, JobId, Parameters};

use crate::{InprocError, Result, Run, check_spec};

/// A planned job, its initial model and one learner per client.
pub struct Federation {
    plan: tg_job::JobPlan,
    initial: Parameters,
    learners: Vec<Box<dyn Learner>>,
    strategy: Option<Box<dyn tg_strategy::Strategy>>,
}

impl Federation {
    /// Checks that `plan` can run on these learners: one per client, each
    /// with the initial model's layout, and an initial model that is finite.
    pub fn new(
        plan: &tg_job::JobPlan,
        initial: Parameters,
        learners: Vec<Box<dyn Learner>>,
    ) -> Result<Self> {
        check_spec(&plan.spec)?;
        if learners.len() != plan.spec.clients as usize {
            return Err(InprocError::Config(format!(
                "the job is planned for {} clients but {} were given",
                plan.spec.clients,
                learners.len()
            )));
        }
        if initial.num_values() == 0 {
            return Err(InprocError::Config(
                "the initial model has no values".into(),
            ));
        }
        if !initial.all_finite() {
            return Err(InprocError::Config(
                "the initial model has non-finite values (NaN or infinity)".into(),
            ));
        }
        let layout: Vec<(String, Vec<usize>)> = initial
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        // What the job asks of every learner, refused before any round.
        let objective = match plan.spec.strategy.kind {
            StrategyKind::Scaffold => LocalObjective::Scaffold {
                server_control: Parameters::default(),
            },
            StrategyKind::FedProx => LocalObjective::Proximal {
                mu: plan.spec.strategy.proximal_mu,
            },
            _ => LocalObjective::Plain,
        };
        if let Some(why) = learners
            .iter()
            .find_map(|l| l.capabilities().refuses(&plan.spec.train, &objective))
        {
            return Err(InprocError::Config(why));
        }
        if let Some(i) = learners.iter().position(|l| l.layout() != layout) {
            return Err(InprocError::Config(format!(
                "client {i}'s model has other tensors (names or shapes) than the initial model"
            )));
        }
        Ok(Self {
            plan: plan.clone(),
            initial,
            learners,
            strategy: None,
        })
    }

    /// Aggregates with `strategy` (the caller's own, e.g. from Python)
    /// instead of the job's: refused, with the reason, for a job with
    /// secure aggregation or DP ([`tg_coordinator::runner::custom_strategy_refusal`]).
    pub fn with_strategy(mut self, strategy: Box<dyn tg_strategy::Strategy>) -> Result<Self> {
        if let Some(why) = tg_coordinator::runner::custom_strategy_refusal(&self.plan.spec) {
            return Err(InprocError::Config(why.into()));
        }
        self.strategy = Some(strategy);
        Ok(self)
    }

    /// Runs the job, recording it as `job` in `store`; `evaluator` is the
    /// coordinator's own evaluation ([`tg_coordinator::plan::NoHeldOut`]
    /// when it has no data); `stop` ends it before its next round.
    pub async fn run(
        self,
        job: JobId,
        store: &mut Store,
        round_deadline: Duration,
        evaluator: Box<dyn Evaluator>,
        stop: StopSignal,
        on_round: impl FnMut(&RoundRecord) + Send,
    ) -> Result<Finished> {
        let seed = self.plan.spec.seed;
        let agents = self
            .learners
            .into_iter()
            .enumerate()
            .map(|(i, learner)| {
                let id = AgentId::numbered(i);
                let dataset = format!("client-{i}");
                Agent::with_learner(id, learner, seed, dataset)
            })
            .collect();
        let run = Run {
            plan: &self.plan,
            job,
            round_deadline,
            stop: Some(stop),
            strategy: self.strategy,
        };
        run.federate(agents, evaluator, self.initial, store, on_round)
            .await
    }
}
