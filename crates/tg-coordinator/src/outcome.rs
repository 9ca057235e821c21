//! How a job run ended: its rounds, its final model and evaluation, its ε,
//! and the one status rule every runner records.

use tg_model::Evaluation;
use tg_types::Parameters;
use tg_types::record::RoundRecord;

/// The result of a job run.
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// Final global model: the job's head (the last committed version, or
    /// the one an operator rolled back to).
    pub model: Parameters,
    /// The head's registry version (`None`: the initial model).
    pub model_sha256: Option<String>,
    /// Every round, in order.
    pub history: Vec<RoundRecord>,
    /// Evaluation of the final model (None if no round committed and the
    /// initial model could not be evaluated).
    pub final_evaluation: Option<Evaluation>,
    /// ε spent by the job: the larger of its ledger's and the largest any
    /// agent reported for its own data (DP jobs only).
    pub epsilon: Option<f64>,
    /// Why the job stopped before its last round to stay within budget.
    pub budget_exhausted: Option<String>,
    /// An operator asked the job to stop; it stopped before round `n`.
    pub stopped_before: Option<u32>,
}

impl RunOutcome {
    /// The one rule for how a job that ran ended, for every runner: stopped
    /// by an operator, stopped by its budget, completed if any round
    /// committed, and failed if none did.
    pub fn status(&self) -> tg_types::record::JobStatus {
        use tg_types::record::{JobStatus, RoundStatus};
        if self.stopped_before.is_some() {
            JobStatus::Stopped
        } else if self.budget_exhausted.is_some() {
            JobStatus::BudgetExhausted
        } else if self
            .history
            .iter()
            .any(|r| r.status == RoundStatus::Committed)
        {
            JobStatus::Completed
        } else {
            JobStatus::Failed
        }
    }
}
