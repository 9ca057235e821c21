//! The agent: what runs on each data owner's machine.
//!
//! Design decision: an [`Agent`] is a synchronous handler from a request frame
//! to a reply frame — [`Agent::handle_frame`]`(&[u8]) -> Result<Handled, _>`
//! (a reply frame, or the job's end), like Flower's client app. It
//! owns the local data and per-client state (SCAFFOLD's control variate) and
//! knows nothing about transports or async runtimes; the in-process federation
//! and the network daemon both drive the same handler. Raw data never leaves
//! this type: replies carry only model updates, example counts and metrics.

pub mod aggregator;
mod checks;
pub mod control;
pub mod daemon;
mod envelope;
mod guard;
mod join;
pub mod learner;
pub mod net;
pub mod policy;
mod secure;
pub mod tee;

pub use guard::PrivacyGuard;
pub use learner::{CandleLearner, CandleTraining, Capabilities, Learner, LocalTraining, Round};
pub use policy::{Budget, OwnerLedger, OwnerPolicy, Roster};

use tg_model::net::ModelShape;
use tg_model::{Dataset, ModelError};
use tg_proto::{
    DeclineReason, EvaluateReply, EvaluateRequest, ProtoError, RoundRef, ToAgent, ToCoordinator,
    TrainReply, TrainRequest,
};
use tg_types::{AgentId, JobId};

/// Errors that stop an agent from answering at all (anything else becomes a
/// [`ToCoordinator::Declined`] reply).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A frame could not be decoded or encoded.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// Local data could not be prepared.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The coordinator refused to admit this agent.
    #[error("{0}")]
    Refused(String),
    /// The network layer failed.
    #[error("network: {0}")]
    Net(#[from] tg_net::NetError),
    /// The job requires a TEE this machine does not have.
    #[error("{0}")]
    NoTee(String),
    /// Local data does not match the job's declared schema.
    #[error("{0}")]
    Schema(String),
    /// The owner's privacy ledger cannot be opened (another agent holds
    /// it, or it is unreadable): nothing is trained without it.
    #[error("this agent's privacy ledger is unreadable: {0}")]
    Ledger(String),
    /// The job trains the operator's own model, which this agent's
    /// built-in learner cannot build.
    #[error(
        "the job trains the operator's own model (a safetensors file), and this agent trains only the built-in models"
    )]
    CustomModel,
    /// The coordinator's attested aggregator failed this agent's check (or
    /// none was offered and the owner requires one): nothing was sent.
    #[error("the coordinator's aggregator is refused: {0}")]
    Aggregator(String),
}

/// A round this agent declined, and why: the coordinator is told only the
/// reason's code; the owner gets the detail.
#[derive(Clone, Debug)]
pub struct Declined {
    /// The round.
    pub round: u32,
    /// The code the coordinator was sent.
    pub reason: DeclineReason,
    /// What exactly fell short.
    pub detail: String,
}

/// What the agent did with a frame.
#[derive(Debug)]
pub enum Handled {
    /// Send this frame back to the coordinator.
    Reply(Vec<u8>),
    /// The job is over.
    Finished(JobId),
}

/// What the agent did with a decoded message.
#[derive(Debug)]
pub enum Response {
    /// Send this message back to the coordinator.
    Reply(ToCoordinator),
    /// The job is over.
    Finished(JobId),
}

/// One federation participant with its private data.
pub struct Agent {
    id: AgentId,
    /// What trains on the local data (candle's models, or the user's code).
    learner: Box<dyn Learner>,
    /// Values in this agent's model.
    params: usize,
    /// Its tensors' names and shapes: every model a request carries must
    /// have exactly this layout.
    layout: Vec<(String, Vec<usize>)>,
    seed: u64,
    /// This agent's own privacy limit (DP-SGD jobs).
    guard: Option<PrivacyGuard>,
    /// Ed25519 identity that signs secure-aggregation messages.
    identity: Option<ed25519_dalek::SigningKey>,
    /// The secure-aggregation round in progress.
    session: Option<secure::Session>,
    /// The data owner's floors and budget (never the offer's).
    policy: OwnerPolicy,
    /// What this agent's data has spent, and the rounds it trained.
    ledger: OwnerLedger,
    /// What local shuffling is seeded with besides `seed` (default: the id).
    seed_name: String,
    /// Compression state (top-k's carried residual), kept across rounds.
    compressor: tg_compress::Compressor,
    /// The current round, when its request arrived, and the coordinator's
    /// deadline for it (ms).
    round_clock: Option<(RoundRef, std::time::Instant, u64)>,
    /// The job is differentially private: no un-noised metrics leave.
    private_job: bool,
    /// The last round this agent evaluated a model for (at most one
    /// evaluation per round, in increasing order).
    last_evaluated: u32,
    /// The last round declined, until the runtime takes it.
    last_declined: Option<Declined>,
    /// The attested aggregator this agent seals its updates to.
    sealing: Option<aggregator::Sealing>,
}

impl Agent {
    /// An agent holding `data`, trained with this crate's candle models of
    /// `shape`; `seed` makes its local shuffling reproducible.
    pub fn new(
        id: AgentId,
        shape: ModelShape,
        data: &Dataset,
        seed: u64,
    ) -> Result<Self, AgentError> {
        let learner = CandleLearner::new(shape, data)?;
        Ok(Self::with_learner(
            id,
            Box::new(learner),
            seed,
            policy::fingerprint(data),
        ))
    }

    /// An agent whose local training is `learner`'s (the Python SDK's
    /// learners call the user's code). `dataset` names the data for the
    /// owner's per-dataset budget (see [`OwnerLedger`]).
    pub fn with_learner(
        id: AgentId,
        learner: Box<dyn Learner>,
        seed: u64,
        dataset: impl Into<String>,
    ) -> Self {
        // The model's size and layout, once: every request is checked
        // against them.
        let layout = learner.layout();
        // A layout too large to count matches no request: every round is declined.
        let params = layout
            .iter()
            .try_fold(0usize, |sum, (_, shape)| {
                shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .and_then(|n| sum.checked_add(n))
            })
            .unwrap_or(usize::MAX);
        Self {
            learner,
            params,
            layout,
            seed,
            guard: None,
            identity: None,
            session: None,
            policy: OwnerPolicy::permissive(),
            ledger: OwnerLedger::in_memory(dataset.into()),
            seed_name: id.as_str().to_owned(),
            compressor: tg_compress::Compressor::default(),
            round_clock: None,
            private_job: false,
            last_evaluated: 0,
            last_declined: None,
            sealing: None,
            id,
        }
    }

    /// Seeds local shuffling with `name` instead of the agent's id, so a
    /// network agent holding shard `i` of a dataset shuffles exactly as the
    /// in-process agent `i` does (reproducible comparisons).
    pub fn with_seed_name(mut self, name: impl Into<String>) -> Self {
        self.seed_name = name.into();
        self
    }

    /// Gives the agent the identity key that signs its protocol messages.
    pub fn with_identity(mut self, key: ed25519_dalek::SigningKey) -> Self {
        self.identity = Some(key);
        self
    }

    /// The data owner's policy and this dataset's ledger: every round is
    /// judged and charged against them before training (an agent made with
    /// [`Agent::new`] is permissive, for in-process simulations).
    pub fn with_owner(mut self, policy: OwnerPolicy, ledger: OwnerLedger) -> Self {
        self.policy = policy;
        self.ledger = ledger;
        self
    }

    /// Marks the job as differentially private (its offer names a DP mode):
    /// the agent then withholds evaluation metrics, whatever the owner's
    /// `allow_evaluation` says, since they would leave without noise.
    pub fn with_private_job(mut self, private: bool) -> Self {
        self.private_job = private;
        self
    }

    /// This dataset's ledger as it stands.
    pub fn ledger(&self) -> &OwnerLedger {
        &self.ledger
    }

    /// Protects this agent's data with its own privacy limit: training only
    /// under DP-SGD and only while within the limit; no local evaluation.
    pub fn with_privacy_guard(mut self, guard: PrivacyGuard) -> Self {
        self.guard = Some(guard);
        self
    }

    /// ε this agent's data has spent (agents with a guard).
    pub fn epsilon(&self) -> Option<f64> {
        self.guard.as_ref().map(PrivacyGuard::epsilon)
    }

    /// The agent's id.
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    /// Number of local training examples.
    pub fn num_examples(&self) -> usize {
        self.learner.num_examples()
    }

    /// Handles one frame from the coordinator.
    pub fn handle_frame(&mut self, frame: &[u8]) -> Result<Handled, AgentError> {
        Ok(match self.handle(tg_proto::decode::<ToAgent>(frame)?)? {
            Response::Reply(reply) => Handled::Reply(tg_proto::encode(&reply)?),
            Response::Finished(job) => Handled::Finished(job),
        })
    }

    /// Handles one decoded message from the coordinator.
    pub fn handle(&mut self, message: ToAgent) -> Result<Response, AgentError> {
        let reply = match message {
            ToAgent::Train(req) => self.train(&req),
            ToAgent::Evaluate(req) => self.evaluate(&req),
            ToAgent::SecAgg(m) => self.on_secagg(&m),
            ToAgent::Finished { job } => return Ok(Response::Finished(job)),
            _ => {
                return Err(ProtoError::Malformed(
                    "message kind not understood by this agent".into(),
                )
                .into());
            }
        };
        Ok(Response::Reply(reply))
    }

    pub(crate) fn round_seed(&self, at: RoundRef) -> u64 {
        let mut h = self.seed ^ 0x51a7_e5ee_d000_0000;
        for b in self.seed_name.bytes().chain(at.round.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// The last round this agent declined since this was last asked.
    pub fn take_declined(&mut self) -> Option<Declined> {
        self.last_declined.take()
    }

    /// Declines with a code; the detail stays with the owner (this agent's
    /// log and [`Agent::take_declined`]).
    /// The most bytes this round's update may take: the owner's
    /// `max_update_bytes` and what the learner's machine allows now (its
    /// uplink), whichever is less.
    pub(crate) fn upload_budget(&mut self, seconds_left: Option<f64>) -> Option<u64> {
        match (
            self.policy.max_update_bytes,
            self.learner.upload_budget(seconds_left),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|b| b.saturating_sub(self.seal_overhead()))
    }

    /// Seconds left of the coordinator's deadline for round `at` (when it
    /// set one), counted from when its request arrived.
    pub(crate) fn seconds_left(&self, at: RoundRef) -> Option<f64> {
        let (round, started, deadline_ms) = self.round_clock?;
        (round == at)
            .then(|| (deadline_ms as f64 / 1000.0 - started.elapsed().as_secs_f64()).max(0.0))
    }

    fn declined(&mut self, at: RoundRef, reason: DeclineReason, detail: &str) -> ToCoordinator {
        tracing::warn!(round = at.round, "declined: {reason}: {detail}");
        self.last_declined = Some(Declined {
            round: at.round,
            reason,
            detail: detail.to_owned(),
        });
        ToCoordinator::Declined {
            at,
            agent: self.id.clone(),
            reason,
        }
    }

    fn train(&mut self, req: &TrainRequest) -> ToCoordinator {
        // Deterministic checks first, so a malformed request costs no budget.
        if let Err(detail) = self.precheck(req) {
            return self.declined(req.at, DeclineReason::TrainingFailed, &detail);
        }
        self.round_clock = req
            .config
            .deadline_ms
            .map(|ms| (req.at, std::time::Instant::now(), ms));
        // The machine's own conditions, before anything is charged: ready
        // at all, and an update that could never fit its envelope.
        if let Err(why) = self.learner.ready() {
            return self.declined(
                req.at,
                DeclineReason::TrainingFailed,
                &format!("not ready: {why}"),
            );
        }
        if let Some(why) = envelope::cannot_fit(req, self.upload_budget(self.seconds_left(req.at)))
        {
            return self.declined(req.at, DeclineReason::OwnerFloor, &why);
        }
        // The owner's policy: replays, plaintext, floors, the dataset's budget.
        let pending = match policy::judge_round(
            &self.round_policy(),
            &self.ledger,
            req,
            req.global.num_values(),
        ) {
            Ok(p) => p,
            Err((code, detail)) => return self.declined(req.at, code, &detail),
        };
        // The charges are made before training: a crash mid-round over-counts, never under-counts.
        let epsilon = match self
            .guard
            .as_mut()
            .map(|g| g.charge(req.config.dp_sgd.as_ref()))
        {
            Some(Err((code, detail))) => return self.declined(req.at, code, &detail),
            Some(Ok(e)) => Some(e),
            None => None,
        };
        if let Err((code, detail)) = self.ledger.commit(pending) {
            return self.declined(req.at, code, &detail);
        }
        let round = Round {
            number: req.at.round,
            global: &req.global,
            config: &req.config,
            objective: &req.objective,
            seed: self.round_seed(req.at),
        };
        let dp_sgd = req.config.dp_sgd.is_some();
        match self.learner.train(&round).and_then(|mut out| {
            // What the learner returns is checked like anything from outside.
            checks::update_fits(&out, &self.layout)?;
            // The loss of private data is never released, and a loss that is
            // not a number is no metric (it would get the update refused).
            if dp_sgd || !out.train_loss.is_some_and(f64::is_finite) {
                out.train_loss = None;
            }
            Ok(out)
        }) {
            // Secure round: the update leaves only masked, inside the protocol.
            Ok(out) if let Some(secure) = &req.secure => {
                self.start_secure(req.at, secure, &out.update, dp_sgd)
            }
            Ok(out) => {
                let reply = TrainReply {
                    at: req.at,
                    agent: self.id.clone(),
                    update: out.update,
                    compressed: None,
                    // Under DP-SGD the dataset size is private: uniform weight.
                    num_examples: if dp_sgd {
                        1
                    } else {
                        self.learner.num_examples() as u64
                    },
                    train_loss: out.train_loss,
                    steps: out.steps,
                    control_delta: out.control_delta,
                    epsilon,
                };
                // The owner's envelope: measured on the frame that would leave.
                let budget = self.upload_budget(self.seconds_left(req.at));
                match envelope::fit(
                    &mut self.compressor,
                    reply,
                    req.config.compress,
                    req.config.adaptive_sparsity,
                    budget,
                ) {
                    Ok((reply, _)) => self.sealed(reply),
                    Err(why) => self.declined(req.at, DeclineReason::OwnerFloor, &why),
                }
            }
            Err(e) => self.declined(req.at, DeclineReason::TrainingFailed, &e),
        }
    }

    fn evaluate(&mut self, req: &EvaluateRequest) -> ToCoordinator {
        // Metrics on local data, from a model the coordinator chose, leave
        // without DP: only when the owner allows it, never for a DP job or
        // a dataset under a budget (a malicious coordinator could otherwise
        // probe the data through them), and at most once per round.
        let under_dp = self.guard.is_some()
            || self.private_job
            || self.policy.budget.is_some()
            || self.policy.max_round_epsilon.is_some();
        if under_dp || !self.policy.allow_evaluation {
            return self.declined(
                req.at,
                DeclineReason::MetricsWithheld,
                "the agent's data is under DP, or its owner withholds metrics",
            );
        }
        if req.at.round <= self.last_evaluated {
            return self.declined(
                req.at,
                DeclineReason::MetricsWithheld,
                "this agent already evaluated a model for this round or a later one",
            );
        }
        self.last_evaluated = req.at.round;
        for model in std::iter::once(&req.model).chain(req.baseline.as_ref()) {
            if let Err(detail) = checks::model_fits(model, &self.layout) {
                return self.declined(req.at, DeclineReason::EvaluationFailed, &detail);
            }
        }
        // The rollout gate's baseline is evaluated in the same answer: still
        // one request per round.
        let baseline = match req.baseline.as_ref().map(|b| self.learner.evaluate(b)) {
            None => None,
            Some(Ok(e)) => Some(tg_proto::EvaluationFigures {
                num_examples: e.num_examples,
                loss: e.loss,
                accuracy: e.accuracy,
            }),
            Some(Err(e)) => return self.declined(req.at, DeclineReason::EvaluationFailed, &e),
        };
        match self.learner.evaluate_tasks(&req.model) {
            Ok((e, mut tasks)) => {
                // Counts the coordinator would refuse (or, past its limit,
                // refuse the whole reply for) are left out here: the
                // totals still count.
                if let Some(why) =
                    tg_types::record::task_successes_problem(&tasks, e.num_examples, e.accuracy)
                {
                    tracing::warn!("per-task evaluation counts left out: {why}");
                    tasks.clear();
                }
                ToCoordinator::Evaluated(EvaluateReply {
                    at: req.at,
                    agent: self.id.clone(),
                    num_examples: e.num_examples,
                    loss: e.loss,
                    accuracy: e.accuracy,
                    baseline,
                    tasks,
                })
            }
            Err(e) => self.declined(req.at, DeclineReason::EvaluationFailed, &e),
        }
    }
}

#[cfg(test)]
mod tests;
