//! What trains and evaluates on the owner's data: the one part of an agent a
//! user replaces.
//!
//! Design decision: everything an agent does with a round *around* training
//! — the owner's floors and budget, replay refusal, compression, clipping,
//! noise, masking and signing — stays in [`crate::Agent`], whatever trains.
//! A [`Learner`] only turns a global model into a local update (and a model
//! into metrics). The built-in [`CandleLearner`] trains this crate's candle
//! models; the Python SDK's learner calls the user's PyTorch or NumPy code.
//! A learner says what it can do ([`Capabilities`]), so a round it cannot
//! honour (DP-SGD, SCAFFOLD) is declined before anything is charged.

use tg_model::net::ModelShape;
use tg_model::{Dataset, Evaluation, LocalData, LocalOutcome, ModelError};
use tg_types::Parameters;
use tg_types::spec::{LocalObjective, TrainConfig};

/// What a learner can honour beyond plain local training.
///
/// DP-SGD cannot be claimed from outside this crate: the agent charges ε
/// for a DP-SGD round on the learner's word that it clipped and noised
/// every example, so only [`CandleLearner`], whose DP-SGD is tested here,
/// may say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    dp_sgd: bool,
    scaffold: bool,
    proximal: bool,
}

impl Capabilities {
    /// Plain local training only (FedAvg, FedAdam).
    pub fn plain() -> Self {
        Self {
            dp_sgd: false,
            scaffold: false,
            proximal: false,
        }
    }

    /// Also adds FedProx's proximal term `μ/2‖w − w_global‖²` (the round's
    /// `μ` reaches the learner in [`Round::objective`]).
    #[must_use]
    pub fn with_proximal(mut self) -> Self {
        self.proximal = true;
        self
    }

    /// Also keeps and applies SCAFFOLD's control variates.
    #[must_use]
    pub fn with_scaffold(mut self) -> Self {
        self.scaffold = true;
        self
    }

    /// Whether DP-SGD rounds can run on this learner.
    pub fn dp_sgd(&self) -> bool {
        self.dp_sgd
    }

    /// Why a round with `config` and `objective` is beyond this learner, if it is.
    pub fn refuses(&self, config: &TrainConfig, objective: &LocalObjective) -> Option<String> {
        if config.dp_sgd.is_some() && !self.dp_sgd {
            return Some(
                "the job asks for DP-SGD (local per-example clipping and noise), which this \
                 agent's learner does not implement; use central or distributed DP instead"
                    .into(),
            );
        }
        match objective {
            LocalObjective::Scaffold { .. } if !self.scaffold => Some(
                "the job uses SCAFFOLD, whose control variates this agent's learner does not \
                 implement; use FedAvg, FedProx or FedAdam"
                    .into(),
            ),
            LocalObjective::Proximal { .. } if !self.proximal => Some(
                "the job uses FedProx, whose proximal term this agent's learner does not declare \
                 that it adds; use FedAvg or FedAdam, or declare FedProx support"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// One round's training as the learner sees it.
#[derive(Debug)]
pub struct Round<'a> {
    /// The round number (1-based).
    pub number: u32,
    /// The global model to start from (its layout checked against [`Learner::layout`]).
    pub global: &'a Parameters,
    /// Local epochs, batch size, learning rate, optimizer, DP-SGD.
    pub config: &'a TrainConfig,
    /// Plain, proximal or SCAFFOLD.
    pub objective: &'a LocalObjective,
    /// A seed for this agent and round: shuffling with it reproduces a run.
    pub seed: u64,
}

/// Trains and evaluates on data that never leaves it.
pub trait Learner: Send {
    /// The model's tensors (name, shape), in order: every model a request
    /// carries must have exactly this layout.
    fn layout(&self) -> Vec<(String, Vec<usize>)>;
    /// Local training examples: the update's weight in FedAvg.
    fn num_examples(&self) -> usize;
    /// What beyond plain training this learner honours.
    fn capabilities(&self) -> Capabilities {
        Capabilities::plain()
    }
    /// Trains from `round.global` and returns `local − global`, with the
    /// layout of [`Learner::layout`]. An error declines the round.
    fn train(&mut self, round: &Round<'_>) -> Result<LocalOutcome, String>;
    /// Loss and accuracy of `model` on the local data.
    fn evaluate(&mut self, model: &Parameters) -> Result<Evaluation, String>;
    /// [`Learner::evaluate`] with success counts per task, for learners
    /// whose evaluation runs episodes of named tasks (a robot's rollouts);
    /// by default none. The counts must add up to the evaluation's
    /// `num_examples`, or the coordinator drops them.
    fn evaluate_tasks(
        &mut self,
        model: &Parameters,
    ) -> Result<(Evaluation, Vec<tg_types::record::TaskSuccesses>), String> {
        self.evaluate(model).map(|e| (e, Vec::new()))
    }
    /// The most bytes the next update may take on the wire as this machine
    /// stands now (e.g. its measured uplink over the time an upload may
    /// take, at most `seconds_left` of the coordinator's deadline); `None`:
    /// no limit beyond the owner's `max_update_bytes`.
    fn upload_budget(&mut self, _seconds_left: Option<f64>) -> Option<u64> {
        None
    }
    /// Whether this machine may take part in a round now (a battery, idle
    /// or thermal condition); asked before anything is charged.
    fn ready(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The built-in learner: this crate's candle models on a [`Dataset`].
pub struct CandleLearner {
    shape: ModelShape,
    data: LocalData,
    layout: Vec<(String, Vec<usize>)>,
    /// SCAFFOLD client control variate `c_i`, kept across rounds.
    control: Option<Parameters>,
}

impl CandleLearner {
    /// A learner training models of `shape` on `data`.
    pub fn new(shape: ModelShape, data: &Dataset) -> Result<Self, ModelError> {
        let model = tg_model::init_parameters(&shape, 0)?;
        Ok(Self {
            shape,
            data: LocalData::new(data)?,
            layout: model
                .tensors()
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect(),
            control: None,
        })
    }
}

impl Learner for CandleLearner {
    fn layout(&self) -> Vec<(String, Vec<usize>)> {
        self.layout.clone()
    }

    fn num_examples(&self) -> usize {
        self.data.len()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dp_sgd: true,
            scaffold: true,
            proximal: true,
        }
    }

    fn train(&mut self, round: &Round<'_>) -> Result<LocalOutcome, String> {
        tg_model::train_local(
            &self.shape,
            round.global,
            &self.data,
            round.config,
            round.objective,
            &mut self.control,
            round.seed,
        )
        .map_err(|e| e.to_string())
    }

    fn evaluate(&mut self, model: &Parameters) -> Result<Evaluation, String> {
        tg_model::evaluate(&self.shape, model, &self.data).map_err(|e| e.to_string())
    }
}

/// What a network agent trains with: its data, and a learner for each job
/// it is offered.
///
/// The runtime asks for a learner when a coordinator offers a new job, and
/// keys the owner's privacy ledger with [`LocalTraining::ledger_key`].
pub trait LocalTraining: Send + Sync {
    /// Local examples (shown in the agent's status).
    fn examples(&self) -> usize;
    /// The name of this data in the owner's privacy ledger under `policy`.
    fn ledger_key(&self, policy: &crate::OwnerPolicy) -> String;
    /// A learner for `offer`'s model, or why this agent cannot train it
    /// (the agent then stops with that error).
    fn learner(&self, offer: &tg_proto::Offer) -> Result<Box<dyn Learner>, crate::AgentError>;
}

/// The built-in models (the job names one) trained on a [`Dataset`]: what
/// `tensorguard agent start` runs.
pub struct CandleTraining {
    data: Dataset,
}

impl CandleTraining {
    /// Trains the built-in models on `data`.
    pub fn new(data: Dataset) -> Self {
        Self { data }
    }
}

impl LocalTraining for CandleTraining {
    fn examples(&self) -> usize {
        self.data.len()
    }

    fn ledger_key(&self, policy: &crate::OwnerPolicy) -> String {
        policy.ledger_key(&self.data)
    }

    fn learner(&self, offer: &tg_proto::Offer) -> Result<Box<dyn Learner>, crate::AgentError> {
        if offer.custom_model {
            return Err(crate::AgentError::CustomModel);
        }
        if let Some(schema) = &offer.schema {
            crate::tee::check_schema(&self.data, schema)?;
        }
        let shape = ModelShape::for_dataset(offer.model, offer.hidden as usize, &self.data)?;
        Ok(Box::new(CandleLearner::new(shape, &self.data)?))
    }
}
