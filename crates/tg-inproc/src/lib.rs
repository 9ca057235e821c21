//! In-process federation: one coordinator and N agents as tokio tasks that
//! exchange encoded protocol frames over bounded channels.
//!
//! Design decision: everything but the transport is the production code — the
//! same [`tg_agent::Agent`] handler, the same [`tg_coordinator::Coordinator`],
//! the same frames and the same store. Only the [`ChannelTransport`] is
//! specific to running in one process. Thread policy: candle runs one compute
//! thread per training job, and at most one training job per CPU core runs at
//! a time (a semaphore), because oversubscribing 2 cores with 10 agents'
//! thread pools costs ~3× (see ANCHORS.md).
//!
//! Dropouts here are *fault injection*: with probability `dropout` a selected
//! agent disconnects instead of answering, decided by a seeded RNG so runs
//! reproduce. Reports label it as such.

mod agents;
pub mod attack;
mod custom;

pub use custom::Federation;

use agents::{Dropout, agent_task};
mod transport;

use std::sync::Arc;
use std::time::Duration;

use tg_agent::{Agent, PrivacyGuard};
use tg_coordinator::CoordinatorError;
use tg_coordinator::plan::{HeldOut, Stages};
use tg_coordinator::runner::{Finished, JobRun};
use tg_model::net::ModelShape;
use tg_model::partition::partition;
use tg_model::{
    DatasetSplit, Evaluation, LocalData, ModelError, evaluate, init_parameters, load_dataset,
    train_local,
};
use tg_store::Store;
use tg_strategy::StrategyError;
use tg_types::privacy::DpMode;
use tg_types::record::RoundRecord;
use tg_types::spec::{JobSpec, LocalObjective};
use tg_types::{AgentId, JobId, Parameters};
use tokio::sync::{Semaphore, mpsc};

pub use transport::ChannelTransport;

/// Frames queued per agent inbox.
const INBOX_CAPACITY: usize = 4;

/// Errors running an in-process federation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InprocError {
    /// The job spec is not runnable.
    #[error("{0}")]
    Config(String),
    /// Data or model problem.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Strategy construction failed.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// The coordinator stopped.
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    /// An agent could not be created.
    #[error(transparent)]
    Agent(#[from] tg_agent::AgentError),
}

/// Result alias for this crate.
pub type Result<T, E = InprocError> = std::result::Result<T, E>;

/// A job whose data is loaded and partitioned, ready to run.
pub struct Prepared {
    spec: JobSpec,
    split: DatasetSplit,
    parts: Vec<Vec<usize>>,
    shape: ModelShape,
    initial: Parameters,
    /// The job as planned: the spec until [`Prepared::set_plan`].
    plan: tg_job::JobPlan,
    /// SIMULATION ONLY: a poisoning attack and its attackers.
    attack: Option<(attack::AttackSpec, Vec<usize>)>,
}

impl Prepared {
    /// Loads and partitions the data, checks the spec, and draws the initial model.
    pub fn new(spec: JobSpec) -> Result<Self> {
        check_spec(&spec)?;
        let split = load_dataset(&spec.dataset)?;
        if split.test.is_empty() {
            return Err(InprocError::Config(
                "the dataset has no held-out test examples".into(),
            ));
        }
        let parts = partition(
            split.train.labels(),
            spec.clients as usize,
            spec.partition,
            spec.seed,
        )?;
        let shape = ModelShape::for_dataset(spec.model, spec.hidden, &split.train)?;
        let initial = init_parameters(&shape, spec.seed)?;
        Ok(Self {
            split,
            parts,
            shape,
            initial,
            plan: tg_job::JobPlan {
                spec: spec.clone(),
                calibrated: false,
            },
            spec,
            attack: None,
        })
    }

    /// SIMULATION ONLY: makes a seeded share of the clients attack (see
    /// [`attack`]); returns the attacking clients' indices.
    pub fn set_attack(&mut self, spec: attack::AttackSpec) -> Result<Vec<usize>> {
        spec.check().map_err(InprocError::Config)?;
        let who = spec.attackers(self.parts.len(), self.spec.seed);
        self.attack = Some((spec, who.clone()));
        Ok(who)
    }

    /// How often `model` sends the held-out set, triggered, to the
    /// backdoor's target class (non-target examples only).
    pub fn backdoor_success(&self, model: &Parameters) -> Result<f64> {
        Ok(attack::backdoor_success(
            &self.shape,
            model,
            &self.split.test,
        )?)
    }

    /// Client `i`'s agent: honest, or an attacker when the run has one.
    fn agent(&self, i: usize, idx: &[usize]) -> Result<Agent> {
        let data = self.split.train.subset(idx);
        let id = AgentId::numbered(i);
        let Some((spec, who)) = &self.attack else {
            return Ok(Agent::new(id, self.shape, &data, self.spec.seed)?);
        };
        if !who.contains(&i) {
            return Ok(Agent::new(id, self.shape, &data, self.spec.seed)?);
        }
        let (colluders, z) = if spec.kind == attack::AttackKind::Alie {
            let others = who
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| {
                    tg_agent::CandleLearner::new(
                        self.shape,
                        &self.split.train.subset(&self.parts[j]),
                    )
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let per_round =
                ((f64::from(self.spec.clients) * self.spec.fraction).round() as usize).max(1);
            (others, attack::alie_z(per_round, who.len()))
        } else {
            (Vec::new(), 0.0)
        };
        let poisoned = attack::poisoned(spec.kind, &data)?;
        let learner = attack::Attacker::new(
            self.shape,
            &poisoned,
            spec.kind,
            colluders,
            z,
            self.spec.seed ^ i as u64,
        )?;
        Ok(Agent::with_learner(
            id,
            Box::new(learner),
            self.spec.seed,
            format!("simulated-attacker-{i}"),
        ))
    }

    /// The spec.
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// Training examples held by each client.
    pub fn client_sizes(&self) -> Vec<usize> {
        self.parts.iter().map(Vec::len).collect()
    }

    /// Runs the job as planned (`tg_job::Job::plan`): its privacy
    /// calibrated and its secure aggregation sized. What to train and on
    /// which data stay those the federation was prepared for.
    pub fn set_plan(&mut self, plan: &tg_job::JobPlan) -> Result<()> {
        let spec = plan.spec.clone();
        let same_data = spec.dataset == self.spec.dataset
            && spec.partition == self.spec.partition
            && spec.clients == self.spec.clients
            && spec.seed == self.spec.seed
            && spec.model == self.spec.model
            && spec.hidden == self.spec.hidden;
        if !same_data {
            return Err(InprocError::Config(
                "the plan changes the data or the model the federation was prepared for".into(),
            ));
        }
        check_spec(&spec)?;
        self.spec = spec;
        self.plan = plan.clone();
        Ok(())
    }

    /// Model size in parameters.
    pub fn num_parameters(&self) -> usize {
        self.initial.num_values()
    }

    /// Training and test set sizes.
    pub fn sizes(&self) -> (usize, usize) {
        (self.split.train.len(), self.split.test.len())
    }

    /// The yardstick: the same model trained on the pooled training set for
    /// `rounds × local_epochs` epochs with the same optimizer, evaluated on
    /// the same held-out split.
    pub fn centralized_baseline(&self) -> Result<Evaluation> {
        let train = LocalData::new(&self.split.train)?;
        let mut cfg = self.spec.train;
        cfg.dp_sgd = None; // the yardstick is the non-private model
        cfg.local_epochs = self.spec.rounds.saturating_mul(cfg.local_epochs);
        let out = train_local(
            &self.shape,
            &self.initial,
            &train,
            &cfg,
            &LocalObjective::Plain,
            &mut None,
            self.spec.seed,
        )?;
        let mut model = self.initial.clone();
        model
            .add_scaled(&out.update, 1.0)
            .map_err(ModelError::from)?;
        Ok(evaluate(
            &self.shape,
            &model,
            &LocalData::new(&self.split.test)?,
        )?)
    }

    /// Runs the federation, recording job `job` in `store`.
    pub async fn run(
        &self,
        job: JobId,
        store: &mut Store,
        round_deadline: Duration,
        on_round: impl FnMut(&RoundRecord) + Send,
    ) -> Result<Finished> {
        let evaluator = Box::new(HeldOut::new(self.shape, &self.split.test)?);
        let mut agents = Vec::with_capacity(self.parts.len());
        for (i, idx) in self.parts.iter().enumerate() {
            agents.push(self.agent(i, idx)?);
        }
        let run = Run {
            plan: &self.plan,
            job,
            round_deadline,
            stop: None,
            strategy: None,
        };
        run.federate(agents, evaluator, self.initial.clone(), store, on_round)
            .await
    }
}

/// One run of a federation: the plan, the job's id and the deadline.
pub(crate) struct Run<'a> {
    pub(crate) plan: &'a tg_job::JobPlan,
    pub(crate) job: JobId,
    pub(crate) round_deadline: Duration,
    pub(crate) stop: Option<tg_coordinator::StopSignal>,
    pub(crate) strategy: Option<Box<dyn tg_strategy::Strategy>>,
}

impl Run<'_> {
    /// Runs `agents` (client `i` is `agents[i]`) against the one engine.
    pub(crate) async fn federate(
        self,
        agents: Vec<Agent>,
        evaluator: Box<dyn tg_coordinator::Evaluator>,
        initial: Parameters,
        store: &mut Store,
        on_round: impl FnMut(&RoundRecord) + Send,
    ) -> Result<Finished> {
        let spec = &self.plan.spec;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let mut identities = std::collections::BTreeMap::new();
        let permits = Arc::new(Semaphore::new(cores));
        let (events_tx, events_rx) = mpsc::channel(2 * agents.len() + 8);
        let mut inboxes = Vec::with_capacity(agents.len());
        let mut tasks = Vec::with_capacity(agents.len());
        for (i, agent) in agents.into_iter().enumerate() {
            let id = agent.id().clone();
            let mut agent = agent.with_private_job(spec.privacy.is_some());
            if spec.secure_aggregation.is_some() {
                // Each simulated agent gets its own identity, as enrollment would give it.
                let key = identity_from_os()?;
                identities.insert(id.clone(), key.verifying_key().to_bytes());
                agent = agent.with_identity(key);
            }
            if let Some(p) = spec.privacy
                && matches!(p.mode, DpMode::LocalSgd(_))
            {
                // Each simulated data owner holds its data to the job's budget itself.
                agent = agent.with_privacy_guard(PrivacyGuard::new(
                    p.target_epsilon,
                    p.delta,
                    p.accountant,
                ));
            }
            let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
            inboxes.push((id, tx));
            let fault = Dropout {
                p: spec.dropout,
                seed: spec.seed,
                agent: i as u64,
            };
            tasks.push(tokio::spawn(agent_task(
                agent,
                rx,
                events_tx.clone(),
                fault,
                permits.clone(),
            )));
        }
        drop(events_tx);

        let transport = ChannelTransport::new(inboxes, events_rx);
        let run = JobRun {
            id: self.job,
            kind: "demo",
            plan: self.plan,
            stages: Stages {
                train: self.round_deadline,
                stage: self.round_deadline,
            },
            identities,
            // In process every agent shares this CPU.
            prg: tg_secagg::crypto::Prg::for_this_cpu(),
            metrics: None,
            stop: self.stop.clone(),
            strategy: self.strategy,
            sealing: None,
        };
        let finished = run
            .run(transport, evaluator, store, initial, on_round)
            .await;
        for t in tasks {
            let _ = t.await;
        }
        Ok(finished?)
    }
}

fn identity_from_os() -> Result<ed25519_dalek::SigningKey> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| InprocError::Config(format!("the OS random number generator failed: {e}")))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&b))
}

pub(crate) fn check_spec(spec: &JobSpec) -> Result<()> {
    spec.check().map_err(|e| InprocError::Config(e.0))?;
    if spec.attested_aggregator {
        return Err(InprocError::Config(
            "attested_aggregator runs on a fleet coordinator (`tensorguard coordinator start`), whose agents verify its evidence and seal their updates to it; an in-process run has no TEE boundary to attest: remove the key to simulate, or run the job on a fleet".into(),
        ));
    }
    // In process, the DP population is the simulated clients.
    let population = match spec.privacy.map(|p| p.mode) {
        Some(DpMode::Central(c)) => Some(c.population),
        Some(DpMode::Distributed(d)) => Some(d.population),
        _ => None,
    };
    if let Some(population) = population
        && population != spec.clients
    {
        return Err(InprocError::Config(format!(
            "DP samples from a population of {} but the federation has {} clients; \
             in-process, the population is the clients",
            population, spec.clients
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
