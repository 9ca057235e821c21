//! The coordinator: runs a job's rounds — select → broadcast model → local
//! training → upload → aggregate → evaluation gate → commit.
//!
//! Design decision: the coordinator is written against a small [`Transport`]
//! trait that moves frames and reports disconnects. The in-process federation
//! implements it with bounded channels and [`net::NetTransport`] over libp2p,
//! so the round logic is written and tested once. Training replies are
//! folded into the strategy's exact accumulator as they arrive, straight
//! from the frame's bytes, so a round's memory is O(model).
//! Every round ends in the store as `committed` or `failed` with a reason —
//! a round is never silently skipped.

pub mod admission;
pub mod api;
mod federated;
pub mod fleet_view;
pub mod http;
pub mod net;
mod outcome;
pub mod plan;
mod reputation;
mod resume;
mod round;
pub mod runner;
mod secure_round;
pub mod service;
mod transport;

pub use outcome::RunOutcome;
pub use transport::{Frame, Incoming, Outgoing, Transport, TransportEvent};

use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tg_model::{Evaluation, ModelError};
use tg_proto::ToAgent;
use tg_store::{Store, StoreError};
use tg_strategy::{Strategy, StrategyError};
use tg_types::privacy::{LedgerEntry, PrivacySpec};
use tg_types::record::{RoundRecord, RoundStage};
use tg_types::spec::TrainConfig;
use tg_types::{AgentId, JobId, Parameters};
use tracing::Instrument;

/// Errors that stop a job (a failed *round* is not an error: it is recorded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// Storage failed; the job cannot continue without losing records.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A frame could not be encoded.
    #[error(transparent)]
    Proto(#[from] tg_proto::ProtoError),
    /// The strategy failed in a way that is not a quorum problem.
    #[error("strategy error: {0}")]
    Strategy(#[from] StrategyError),
    /// Server-side evaluation failed.
    #[error("evaluation failed: {0}")]
    Evaluation(#[from] ModelError),
    /// Model serialization failed.
    #[error(transparent)]
    Params(#[from] tg_types::ParamsError),
    /// The privacy plan cannot be accounted (e.g. a sampling rate out of range).
    #[error("privacy accounting: {0}")]
    Privacy(#[from] tg_privacy::PrivacyError),
    /// The transport closed: no agent can be reached any more.
    #[error("the transport closed; no agents can be reached")]
    TransportClosed,
}

/// Result alias for this crate.
pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

/// Server-side evaluation of a candidate model (the evaluation gate's input).
pub trait Evaluator: Send {
    /// Loss and accuracy of `params` on the coordinator's held-out data;
    /// `None` when the coordinator holds none ([`plan::NoHeldOut`]): the
    /// gate then checks only that the model is finite.
    fn evaluate(&mut self, params: &Parameters) -> Result<Option<Evaluation>, ModelError>;
}

/// Mechanism settings of a job run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Job id.
    pub job: JobId,
    /// Kind recorded in the store (`demo`, …).
    pub kind: String,
    /// Spec recorded in the store.
    pub spec_json: serde_json::Value,
    /// Rounds to run.
    pub rounds: u32,
    /// Quorum: fewest usable results for a round to commit.
    pub min_results: usize,
    /// Time allowed for local training and its upload (plaintext rounds: the
    /// whole collection); stragglers become dropouts.
    pub round_deadline: Duration,
    /// Time allowed for each later secure-aggregation stage.
    pub stage_deadline: Duration,
    /// Local training settings sent to agents.
    pub train: TrainConfig,
    /// Seed for client sampling.
    pub seed: u64,
    /// The job's privacy budget, if it has one.
    pub privacy: Option<PrivacySpec>,
    /// Secure aggregation, if updates may reach the coordinator only as a sum.
    pub secure: Option<SecureSettings>,
    /// Federated evaluation every this many rounds (and after the last); 0 = never.
    pub evaluate_every: u32,
    /// The rollout gate: each candidate is evaluated by agents against the
    /// current model before it may commit.
    pub gate: Option<tg_strategy::RolloutGate>,
    /// Reputation from the robust aggregator's flags: down-weighting, then
    /// exclusion from sampling.
    pub reputation: Option<tg_types::reputation::ReputationPolicy>,
    /// The attested aggregator's session secret (fleet jobs with
    /// `attested_aggregator`): training replies must arrive sealed to it,
    /// and are opened only here.
    pub sealing: Option<std::sync::Arc<tg_proto::SessionSecret>>,
    /// Attackers per round the robust aggregator is sized for (its `f`):
    /// reputation flags no one in a round with more outliers than that.
    pub byzantine: u32,
}

/// Secure aggregation as the coordinator runs it.
#[derive(Clone, Debug)]
pub struct SecureSettings {
    /// Bits per lane, clip, and the threat model's assumed fractions.
    pub spec: tg_types::spec::SecureAggSpec,
    /// Ed25519 identity (public key) of each admitted agent.
    pub identities: std::collections::BTreeMap<AgentId, [u8; 32]>,
    /// Threads for unmasking.
    pub threads: usize,
    /// Examples per unit of FedAvg weight (see `tg_proto::SecureRound`).
    pub weight_scale: Option<f64>,
    /// Distributed DP: the agents' noise, and the fixed denominator qN.
    pub noise: Option<tg_types::privacy::DistributedDpSpec>,
    /// Mask generator for the fleet.
    pub prg: tg_secagg::crypto::Prg,
}

/// Runs a job's rounds over a transport.
pub struct Coordinator<'s, T: Transport> {
    transport: T,
    strategy: Box<dyn Strategy>,
    evaluator: Box<dyn Evaluator>,
    store: &'s mut Store,
    config: RunConfig,
    rng: ChaCha20Rng,
    /// Largest ε any agent reported for its own data.
    agent_epsilon: Option<f64>,
    metrics: Option<std::sync::Arc<tg_metrics::Metrics>>,
    last_transition: std::time::Instant,
    stop: Option<StopSignal>,
    /// The registry version the current model is (`None`: the initial
    /// model, which the store does not keep).
    base: Option<String>,
    /// The job's latest rollback when the current round started.
    rollback_seq: Option<i64>,
    /// Agents' standings the current round moved, written with its record.
    pending_reputation: Vec<tg_types::reputation::Reputation>,
}

/// Asks a running job to stop before its next round (a round in progress
/// finishes and is recorded; nothing is cut mid-aggregation).
#[derive(Clone, Debug, Default)]
pub struct StopSignal(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl StopSignal {
    /// Requests the stop.
    pub fn stop(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl<'s, T: Transport> Coordinator<'s, T> {
    /// A coordinator for one job.
    pub fn new(
        transport: T,
        strategy: Box<dyn Strategy>,
        evaluator: Box<dyn Evaluator>,
        store: &'s mut Store,
        config: RunConfig,
    ) -> Self {
        let rng = ChaCha20Rng::seed_from_u64(config.seed ^ 0x5e1e_c7ed);
        Self {
            transport,
            strategy,
            evaluator,
            store,
            config,
            rng,
            agent_epsilon: None,
            metrics: None,
            last_transition: std::time::Instant::now(),
            stop: None,
            base: None,
            rollback_seq: None,
            pending_reputation: Vec::new(),
        }
    }

    /// Checks `stop` before every round.
    pub fn with_stop(mut self, stop: StopSignal) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Exports rounds, stage latencies, dropouts and ε to `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<tg_metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Records the job, runs every round from `initial`, tells agents the job
    /// is over, and returns the outcome. `on_round` sees each round as it is
    /// recorded. The caller marks the job finished in the store.
    pub async fn run(
        mut self,
        initial: Parameters,
        mut on_round: impl FnMut(&RoundRecord) + Send,
    ) -> Result<RunOutcome> {
        let resume = self.resume_point(initial)?;
        let mut global = resume.model;
        let mut last_eval = None;
        let mut history = Vec::with_capacity(self.config.rounds as usize);
        let mut charged: u64 = resume.charged;
        let mut epsilon = self.config.privacy.map(|_| resume.epsilon);
        let mut budget_exhausted = None;
        let mut stopped_before = None;
        for round in resume.next_round..=self.config.rounds {
            if self.stop.as_ref().is_some_and(StopSignal::is_stopped) {
                tracing::info!(round, "stop requested; not starting round {round}");
                stopped_before = Some(round);
                break;
            }
            // An operator may have moved the head back (`tensorguard models
            // rollback`) since the last round: the fleet trains from it.
            if let Some(model) = self.adopt_rollback()? {
                global = model;
                last_eval = None;
            }
            let epsilon_after = match self.config.privacy {
                None => None,
                Some(budget) => match self.charge(round, budget, &mut charged)? {
                    Charge::Paid(e) => Some(e),
                    Charge::WouldExceed(reason) => {
                        budget_exhausted = Some(reason);
                        break;
                    }
                },
            };
            // One span per round (exported over OTLP when configured).
            let span = tracing::info_span!(
                "round",
                job = %self.config.job,
                round,
                secure = self.config.secure.is_some(),
                status = tracing::field::Empty,
                participants = tracing::field::Empty,
            );
            let (mut record, next) = match self.config.secure.clone() {
                Some(secure) => {
                    self.run_secure_round(round, &global, &secure)
                        .instrument(span.clone())
                        .await?
                }
                None => {
                    self.run_round(round, &global)
                        .instrument(span.clone())
                        .await?
                }
            };
            span.record("status", record.status.as_str());
            span.record("participants", record.participants);
            if epsilon_after.is_some() {
                record.epsilon = epsilon_after;
                epsilon = epsilon_after;
            }
            if let Some((params, eval)) = next {
                global = params;
                last_eval = eval;
                let every = self.config.evaluate_every;
                // A gated job's agents already evaluated this round's model
                // (the gate's candidate); they answer one request per round.
                if every > 0
                    && self.config.gate.is_none()
                    && (round % every == 0 || round == self.config.rounds)
                {
                    record.federated = self.evaluate_federated(round, &global).await?;
                }
            }
            if let Some(m) = &self.metrics {
                let dropped = record
                    .participants_detail
                    .iter()
                    .filter(|p| p.outcome == tg_types::record::ParticipantOutcome::Dropped)
                    .count();
                m.round_finished(record.status.as_str(), dropped as u64);
                if let Some(e) = epsilon {
                    m.set_epsilon(e);
                }
            }
            on_round(&record);
            history.push(record);
        }
        // A rollback after the last round (or during it) is where the job
        // ends: its final model and evaluation are the head's.
        if let Some(model) = self.adopt_rollback()? {
            global = model;
            last_eval = None;
        }
        let done = Outgoing::encode(&ToAgent::Finished {
            job: self.config.job,
        })?;
        for agent in self.transport.connected() {
            // Best effort: an agent that is gone needs no goodbye.
            let _ = self.transport.send(&agent, &done).await;
        }
        self.transport.flush().await;
        let final_evaluation = match last_eval {
            Some(e) => Some(e),
            None => self.evaluator.evaluate(&global).ok().flatten(),
        };
        Ok(RunOutcome {
            model: global,
            model_sha256: self.base.clone(),
            history,
            final_evaluation,
            epsilon: match (epsilon, self.agent_epsilon) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            budget_exhausted,
            stopped_before,
        })
    }

    /// Pays for `round` in the ledger — durably, before the round starts — or
    /// refuses because ε after it would exceed the target.
    fn charge(&mut self, round: u32, spec: PrivacySpec, charged: &mut u64) -> Result<Charge> {
        // Every round of a job spends the same, so ε after k rounds is one
        // accountant call on k identical steps (for RDP/PLD this equals
        // composing the ledger's rows one by one).
        let step = spec.per_round()?;
        let after = spec.epsilon_after(*charged + 1)?;
        if after > spec.target_epsilon.get() {
            // Only the refusal needs ε before this round.
            let before = spec.epsilon_after(*charged)?;
            return Ok(Charge::WouldExceed(format!(
                "privacy budget exhausted: round {round} would raise ε from {before:.4} to {after:.4}, \
                 above the target ε = {} at δ = {} ({} accountant); stopped after round {}",
                spec.target_epsilon.get(),
                spec.delta.get(),
                spec.accountant,
                round - 1
            )));
        }
        self.store.append_ledger(
            self.config.job,
            &LedgerEntry {
                round,
                mechanism: spec.mode_name().into(),
                spent: step,
                epsilon_after: after,
                delta: spec.delta,
                accountant: spec.accountant,
                release: match spec.mode {
                    tg_types::privacy::DpMode::Distributed(d) => {
                        Some(d.release(spec.delta, *charged + 1)?)
                    }
                    _ => None,
                },
            },
        )?;
        *charged += 1;
        Ok(Charge::Paid(after))
    }
}

enum Charge {
    Paid(f64),
    WouldExceed(String),
}

impl<T: Transport> Coordinator<'_, T> {
    /// Records a stage transition durably, then tells the fleet.
    pub(crate) async fn stage(&mut self, round: u32, stage: RoundStage) -> Result<()> {
        self.store
            .record_stage(self.config.job, round, stage, None)?;
        if let Some(m) = &self.metrics {
            m.stage(
                round,
                stage.as_str(),
                self.last_transition.elapsed().as_secs_f64(),
            );
        }
        self.last_transition = std::time::Instant::now();
        self.transport.announce(round, stage).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
