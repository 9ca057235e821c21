//! The agent's own privacy budget for its data under DP-SGD.
//!
//! Design decision: the coordinator's ledger protects the job, but a data
//! owner should not have to trust the coordinator to stop. An agent with a
//! [`PrivacyGuard`] accounts every DP-SGD round it is asked to run, refuses
//! the round that would take its data past its own limit, and refuses any
//! training or evaluation that would release something not covered by DP.

use tg_privacy::{AccountantKind, Delta, Epsilon, GaussianSteps};
use tg_proto::DeclineReason;
use tg_types::privacy::DpSgdSpec;

/// An agent-side (ε, δ) limit and the steps spent against it.
#[derive(Clone, Debug)]
pub struct PrivacyGuard {
    limit: Epsilon,
    delta: Delta,
    accountant: AccountantKind,
    spent: Vec<GaussianSteps>,
    epsilon: f64,
}

impl PrivacyGuard {
    /// A guard that keeps this agent's data within (`limit`, `delta`).
    pub fn new(limit: Epsilon, delta: Delta, accountant: AccountantKind) -> Self {
        Self {
            limit,
            delta,
            accountant,
            spent: Vec::new(),
            epsilon: 0.0,
        }
    }

    /// ε this agent's data has spent so far.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// Charges one round of `dp` before it runs, or says why it may not run.
    pub(crate) fn charge(
        &mut self,
        dp: Option<&DpSgdSpec>,
    ) -> Result<f64, (DeclineReason, String)> {
        let Some(dp) = dp else {
            return Err((
                DeclineReason::DpRequired,
                "this agent's privacy policy allows training only with DP-SGD, and the request has none".into(),
            ));
        };
        let step = GaussianSteps {
            sampling_rate: dp.sampling_rate,
            noise_multiplier: dp.noise_multiplier,
            steps: u64::from(dp.steps_per_round),
        };
        self.spent.push(step);
        let after =
            tg_privacy::accountant::epsilon(self.accountant, &self.spent, self.delta).epsilon;
        if after > self.limit.get() {
            self.spent.pop();
            return Err((
                DeclineReason::PrivacyBudgetExhausted,
                format!(
                    "this round would raise this agent's ε from {:.4} to {after:.4}, above its limit {} at δ = {}",
                    self.epsilon,
                    self.limit.get(),
                    self.delta.get()
                ),
            ));
        }
        self.epsilon = after;
        Ok(after)
    }
}
