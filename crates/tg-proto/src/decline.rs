//! Why an agent declined a request: fixed codes, never free text.

use serde::{Deserialize, Serialize};

/// Why an agent declined a request. Codes only, by design (the airlock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DeclineReason {
    /// The agent trains only with DP-SGD and the request had none.
    DpRequired,
    /// This round would take the agent's own ε above its limit.
    PrivacyBudgetExhausted,
    /// Local training failed.
    TrainingFailed,
    /// Local evaluation failed.
    EvaluationFailed,
    /// Local metrics are not released (the data is under DP).
    MetricsWithheld,
    /// A secure-aggregation message arrived with no round in progress.
    SecAggNoRound,
    /// A secure-aggregation message was for another round.
    SecAggWrongRound,
    /// The agent's secure-aggregation state machine refused or aborted.
    SecAggFailed,
    /// The round was already trained here (a replay): never trained twice.
    RoundReplayed,
    /// The round's update would leave the agent unmasked, and its owner
    /// does not allow that.
    PlaintextRefused,
    /// The round is below a floor the agent's owner set (noise, ε per round).
    OwnerFloor,
    /// A participant's identity is not certified by the fleet root the
    /// agent pins (a Sybil the coordinator added).
    UncertifiedParticipant,
}

impl std::fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeclineReason::DpRequired => {
                "this agent trains only with DP-SGD and the request has none"
            }
            DeclineReason::PrivacyBudgetExhausted => {
                "this round would take the agent's own ε above its limit"
            }
            DeclineReason::TrainingFailed => "local training failed (details in the agent's log)",
            DeclineReason::EvaluationFailed => {
                "local evaluation failed (details in the agent's log)"
            }
            DeclineReason::MetricsWithheld => {
                "local evaluation metrics are not released: the agent's data is under DP"
            }
            DeclineReason::SecAggNoRound => "secure aggregation: no round in progress",
            DeclineReason::SecAggWrongRound => "secure aggregation: message for another round",
            DeclineReason::SecAggFailed => {
                "secure aggregation aborted (details in the agent's log)"
            }
            DeclineReason::RoundReplayed => {
                "this round was already trained by the agent: a round is never trained twice"
            }
            DeclineReason::PlaintextRefused => {
                "the agent's owner does not allow updates to leave unmasked (no secure aggregation)"
            }
            DeclineReason::UncertifiedParticipant => {
                "a participant's identity is not certified by the fleet root this agent pins"
            }
            DeclineReason::OwnerFloor => {
                "the round is below a floor set by the agent's owner (details in the agent's log)"
            }
        })
    }
}
