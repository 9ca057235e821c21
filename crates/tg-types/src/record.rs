//! Records of what happened: job and round outcomes as stored and reported.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Outcome of one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoundStatus {
    /// Aggregated, passed the evaluation gate, and the model version was stored.
    Committed,
    /// Did not commit (below quorum, gate failed, …); the reason is recorded.
    Failed,
}

/// Where a round is: each transition is recorded durably before the
/// coordinator acts on it, announced to the fleet, and shown live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoundStage {
    /// Participants chosen.
    Selected,
    /// The global model sent to them.
    ModelSent,
    /// Plaintext round: updates collected (folded as they arrived).
    Collected,
    /// SecAgg+ stage 1 collected: public keys.
    AdvertiseKeysCollected,
    /// SecAgg+ stage 2 collected: encrypted shares.
    ShareKeysCollected,
    /// SecAgg+ stage 3 collected: masked inputs.
    MaskedInputCollected,
    /// SecAgg+ stage 4 collected: consistency signatures.
    ConsistencyCheckCollected,
    /// SecAgg+ stage 5 collected: unmasking shares.
    UnmaskCollected,
    /// The sum unmasked.
    Unmasked,
    /// The round committed its model.
    Committed,
    /// The round failed (or was interrupted).
    Failed,
    /// Federated evaluation of the committed model finished.
    Evaluated,
}

impl RoundStage {
    /// Every stage, in the order a round can reach them.
    pub const ALL: [RoundStage; 12] = [
        Self::Selected,
        Self::ModelSent,
        Self::Collected,
        Self::AdvertiseKeysCollected,
        Self::ShareKeysCollected,
        Self::MaskedInputCollected,
        Self::ConsistencyCheckCollected,
        Self::UnmaskCollected,
        Self::Unmasked,
        Self::Committed,
        Self::Failed,
        Self::Evaluated,
    ];

    /// The stage's name in records, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Selected => "selected",
            Self::ModelSent => "model_sent",
            Self::Collected => "collected",
            Self::AdvertiseKeysCollected => "advertise_keys_collected",
            Self::ShareKeysCollected => "share_keys_collected",
            Self::MaskedInputCollected => "masked_input_collected",
            Self::ConsistencyCheckCollected => "consistency_check_collected",
            Self::UnmaskCollected => "unmask_collected",
            Self::Unmasked => "unmasked",
            Self::Committed => "committed",
            Self::Failed => "failed",
            Self::Evaluated => "evaluated",
        }
    }
}

impl std::fmt::Display for RoundStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RoundStage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown round stage `{s}`"))
    }
}

/// Lifecycle state of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    /// Rounds are being run by a live process.
    Running,
    /// All rounds ran.
    Completed,
    /// Stopped by an error.
    Failed,
    /// The process running it died (e.g. `kill -9`) before it finished.
    Interrupted,
    /// Stopped before a round that would have exceeded the privacy budget.
    BudgetExhausted,
    /// Stopped by an operator (`POST /api/v1/jobs/{id}/stop`) between rounds.
    Stopped,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// Stable lowercase name used in storage and JSON.
            pub const fn as_str(&self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($s => Ok(Self::$v),)* other => Err(format!("unknown {} `{other}`", stringify!($t))) }
            }
        }
    };
}

text_enum!(RoundStatus { Committed => "committed", Failed => "failed" });
text_enum!(JobStatus {
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Interrupted => "interrupted",
    BudgetExhausted => "budget_exhausted",
    Stopped => "stopped",
});

/// What became of one selected agent in one round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ParticipantOutcome {
    /// Returned an update that was aggregated.
    Contributed,
    /// Disconnected or missed the deadline.
    Dropped,
    /// Returned something unusable (wrong layout, non-finite values, error).
    Rejected,
}

text_enum!(ParticipantOutcome {
    Contributed => "contributed",
    Dropped => "dropped",
    Rejected => "rejected",
});

/// One agent's part in a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParticipantRecord {
    /// Agent.
    pub agent: crate::AgentId,
    /// What happened.
    pub outcome: ParticipantOutcome,
    /// Local training examples (0 unless contributed).
    pub num_examples: u64,
    /// Mean local training loss (if contributed).
    pub train_loss: Option<f64>,
    /// Bytes of the agent's upload.
    pub upload_bytes: u64,
}

/// A finished round, committed or failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 1-based round number.
    pub round: u32,
    /// Outcome.
    pub status: RoundStatus,
    /// Held-out accuracy of the committed model.
    pub accuracy: Option<f64>,
    /// Held-out loss of the committed model.
    pub loss: Option<f64>,
    /// Agents selected.
    pub selected: u32,
    /// Agents whose updates were aggregated.
    pub participants: u32,
    /// Total bytes uploaded by agents this round.
    pub upload_bytes: u64,
    /// Total bytes sent to agents this round.
    pub download_bytes: u64,
    /// Wall time of the round.
    pub duration_ms: u64,
    /// Why the round failed (None when committed).
    pub reason: Option<String>,
    /// SHA-256 of the committed model's safetensors bytes.
    pub model_sha256: Option<String>,
    /// SHA-256 of the model this round started from (its parent version);
    /// `None` for the job's initial model, which the store does not keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_sha256: Option<String>,
    /// Per-agent detail.
    pub participants_detail: Vec<ParticipantRecord>,
    /// ε of the job after this round (DP jobs; from the privacy ledger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// Federated evaluation of the committed model on the agents' own data
    /// (rounds the job's `evaluate_every` schedules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated: Option<FederatedEvaluation>,
    /// The rollout gate's verdict on this round's candidate (jobs with a
    /// `[gate]`): a rejected candidate leaves the round failed and the
    /// current model in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateVerdict>,
    /// What the round did to each expert (expert-wise aggregation only):
    /// aggregates over the round's clients, from the sum. Without DP, rounds
    /// with different participants can be differenced into one robot's task
    /// mix, so the API shows them to operators only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experts: Vec<ExpertStep>,
    /// How the job's robust aggregator judged each update (jobs with an
    /// `aggregator`): its score and whether it reached the model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub screened: Vec<ScreenRecord>,
    /// Changes of agents' standing this round caused (jobs with
    /// reputation), each with its reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reputation: Vec<crate::reputation::ReputationChange>,
}

/// One update as a robust aggregator judged it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScreenRecord {
    /// The agent.
    pub agent: crate::AgentId,
    /// The rule's score (robust z-score, Krum score, norm or distance to
    /// the aggregate: see `tg_strategy::Screened`); `None` where it is
    /// withheld (the API shows scores, functions of an agent's update, to
    /// operators only).
    pub score: Option<f64>,
    /// Whether the update reached the aggregate.
    pub admitted: bool,
    /// Its outlier z-score: the robust z of its L2 distance to the round's
    /// coordinate-wise median (`None` where withheld, as `score` is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_z: Option<f64>,
    /// Whether reputation flagged it (`outlier_z` above the job's
    /// `reputation_flag_z`; always false without reputation).
    #[serde(default)]
    pub flagged: bool,
}

/// What one round did to one expert of a mixture-of-experts model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertStep {
    /// The expert's weight in the round's mean (`Σ w_e / n`: examples ×
    /// gate mass, summed over clients, per client).
    pub weight: f64,
    /// Its share of the round's shared weight (how much of the fleet's data
    /// went through it).
    pub share: f64,
    /// Whether it moved (its share reached the floor).
    pub updated: bool,
    /// L2 norm of the step applied to it (zero when it did not move).
    pub step_norm: f64,
    /// Per task (the model's task order), the share of the expert's gate
    /// mass that came from that task's examples, from the round's sum of
    /// the clients' `tg.expert_task_mass`; empty when the model does not
    /// carry it. Under distributed DP these are noisy (and may be
    /// negative).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub task_share: Vec<f64>,
    /// The share of the round's clients whose gate mass on the expert
    /// passed their threshold, from the mean of the clients'
    /// `tg.expert_clients`; absent when the model does not carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_share: Option<f64>,
}

/// Success counts of one model in a rollout evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Successes {
    /// Episodes that succeeded.
    pub successes: u64,
    /// Episodes run.
    pub episodes: u64,
}

impl Successes {
    /// The success rate (0 when nothing ran).
    pub fn rate(&self) -> f64 {
        if self.episodes == 0 {
            0.0
        } else {
            self.successes as f64 / self.episodes as f64
        }
    }
}

pub use crate::tasks::{
    MAX_EVALUATED_TASKS, MAX_TASK_NAME, TaskSuccesses, capped_task_successes, sum_task_successes,
    task_successes_problem,
};

/// What the rollout gate decided about a round's candidate, with its
/// figures (`tg_strategy::RolloutGate`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateVerdict {
    /// The candidate's counts.
    pub candidate: Successes,
    /// The current model's counts.
    pub current: Successes,
    /// 95% Newcombe interval of `p_candidate − p_current`: its lower end.
    pub difference_low: f64,
    /// Its upper end.
    pub difference_high: f64,
    /// The margin applied.
    pub margin: f64,
    /// Whether the candidate committed.
    pub passed: bool,
    /// The candidate's counts per task, summed over the judges that
    /// reported them (empty when none did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskSuccesses>,
}

impl std::fmt::Display for GateVerdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "candidate {}/{} ({:.1}%) vs current {}/{} ({:.1}%); 95% Newcombe interval of the difference [{:+.3}, {:+.3}], margin {:.3}",
            self.candidate.successes,
            self.candidate.episodes,
            100.0 * self.candidate.rate(),
            self.current.successes,
            self.current.episodes,
            100.0 * self.current.rate(),
            self.difference_low,
            self.difference_high,
            self.margin
        )
    }
}

/// The committed model evaluated by agents on their own data, combined by
/// the strategy (example-weighted means). Informational: the evaluation
/// gate is the coordinator's held-out set, which no agent can influence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FederatedEvaluation {
    /// Agents asked.
    pub asked: u32,
    /// Agents whose evaluation was combined.
    pub answered: u32,
    /// Examples they evaluated.
    pub num_examples: u64,
    /// Mean loss.
    pub loss: f64,
    /// Accuracy in [0, 1].
    pub accuracy: f64,
    /// Success counts per task, summed over the agents that reported them
    /// (rollout evaluations; empty when none did).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskSuccesses>,
}

/// How a job ended, in the one schema every runner records (the store's
/// job summary, the `job.finished` audit record, `--json` output).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// Job id.
    pub job: String,
    /// The runner that ran it (`demo`, `fleet`).
    pub kind: String,
    /// The one status rule's verdict.
    pub status: JobStatus,
    /// Why the job stopped early, if it did.
    pub reason: Option<String>,
    /// Rounds planned.
    pub rounds: u32,
    /// Rounds committed.
    pub rounds_committed: usize,
    /// Rounds recorded as failed.
    pub rounds_failed: usize,
    /// Held-out accuracy of the final model.
    pub final_accuracy: Option<f64>,
    /// Held-out loss of the final model.
    pub final_loss: Option<f64>,
    /// SHA-256 of the final model's safetensors bytes.
    pub final_model_sha256: Option<String>,
    /// ε spent (DP jobs).
    pub epsilon: Option<f64>,
    /// Distributed DP: ε against the coordinator, which picks the sample.
    pub epsilon_vs_coordinator: Option<f64>,
    /// Why the budget stopped the job, if it did.
    pub budget_exhausted: Option<String>,
    /// The label of a simulated run (noise from a public seed), if it is one.
    #[serde(default)]
    pub simulation: Option<String>,
}

impl JobSummary {
    /// A job that ended before its first round (stopped while waiting for
    /// agents, say): nothing committed, nothing spent.
    pub fn before_first_round(
        job: String,
        kind: String,
        status: JobStatus,
        reason: String,
        rounds: u32,
        simulation: Option<String>,
    ) -> Self {
        Self {
            job,
            kind,
            status,
            reason: Some(reason),
            rounds,
            rounds_committed: 0,
            rounds_failed: 0,
            final_accuracy: None,
            final_loss: None,
            final_model_sha256: None,
            epsilon: None,
            epsilon_vs_coordinator: None,
            budget_exhausted: None,
            simulation,
        }
    }
}
