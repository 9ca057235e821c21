//! Reputation in the round: excluded agents are neither sampled nor asked
//! to evaluate (so they cannot judge the rollout gate), down-weighted ones
//! count less, and every screened update moves its agent's standing.
//!
//! Design decision: the store's reputation rows are read at every selection
//! rather than cached, so an operator's reinstatement (written through the
//! API by another connection) takes effect at the next round, and a restarted
//! coordinator resumes with the standing its last round left. A round's new
//! standings are written in the same transaction as the round's record
//! (`Store::record_round_with`), so a change of standing is never stored
//! without the record and audit entry that carry it.

use std::collections::{BTreeMap, BTreeSet};

use tg_types::AgentId;
use tg_types::record::ScreenRecord;
use tg_types::reputation::{Reputation, ReputationChange, Standing};

use crate::{Coordinator, Result, Transport};

impl<T: Transport> Coordinator<'_, T> {
    /// The job's standings (none without reputation).
    fn standings(&self) -> Result<Vec<Reputation>> {
        if self.config.reputation.is_none() {
            return Ok(Vec::new());
        }
        Ok(self.store.reputations(&self.config.job.to_string())?)
    }

    /// The agents reputation excluded from this job.
    pub(crate) fn excluded(&self) -> Result<BTreeSet<AgentId>> {
        Ok(self
            .standings()?
            .into_iter()
            .filter(|r| r.standing == Standing::Excluded)
            .map(|r| r.agent)
            .collect())
    }

    /// `connected` without the agents reputation excluded; tells the
    /// strategy the down-weighted ones' weights.
    pub(crate) fn eligible(&mut self, connected: Vec<AgentId>) -> Result<Vec<AgentId>> {
        let standings = self.standings()?;
        let weights: BTreeMap<AgentId, f64> = standings
            .iter()
            .filter(|r| r.standing != Standing::Excluded && r.weight < 1.0)
            .map(|r| (r.agent.clone(), r.weight))
            .collect();
        let excluded: BTreeSet<&AgentId> = standings
            .iter()
            .filter(|r| r.standing == Standing::Excluded)
            .map(|r| &r.agent)
            .collect();
        if self.config.reputation.is_some() {
            self.strategy.reweigh(&weights);
        }
        Ok(connected
            .into_iter()
            .filter(|a| !excluded.contains(a))
            .collect())
    }

    /// The strategy's screening of the last round, flagged for reputation:
    /// an update whose outlier score is above the policy's `flag_z`, unless
    /// more updates than the `f` the rule is sized for are (then the round
    /// breaks the rule's assumption — colluders may hold its median — and
    /// no one is flagged).
    pub(crate) fn screen_records(&self, round: u32) -> Vec<ScreenRecord> {
        let screened = self.strategy.screened();
        let above = |z: f64| self.config.reputation.is_some_and(|p| z > p.flag_z);
        let candidates = screened.iter().filter(|s| above(s.outlier_z)).count();
        let most = self.config.byzantine.max(1) as usize;
        let flag = candidates <= most;
        if !flag {
            tracing::warn!(
                round,
                "reputation: {candidates} updates are outliers, more than the {most} the rule is sized for; no one is flagged this round"
            );
        }
        screened
            .into_iter()
            .map(|s| ScreenRecord {
                flagged: flag && above(s.outlier_z),
                agent: s.agent,
                score: Some(s.score),
                admitted: s.admitted,
                outlier_z: Some(s.outlier_z),
            })
            .collect()
    }

    /// Moves the standing of every agent `round` screened and returns the
    /// changes (for the round's record and audit entry); the new rows are
    /// written with the round's record.
    pub(crate) fn observe_screening(
        &mut self,
        round: u32,
        screened: &[ScreenRecord],
    ) -> Result<Vec<ReputationChange>> {
        self.pending_reputation.clear();
        let Some(policy) = self.config.reputation else {
            return Ok(Vec::new());
        };
        if screened.is_empty() {
            return Ok(Vec::new());
        }
        let mut known: BTreeMap<AgentId, Reputation> = self
            .standings()?
            .into_iter()
            .map(|r| (r.agent.clone(), r))
            .collect();
        let mut changes = Vec::new();
        let mut touched = Vec::with_capacity(screened.len());
        for s in screened {
            let r = known
                .entry(s.agent.clone())
                .or_insert_with(|| Reputation::new(s.agent.clone()));
            if let Some(c) = r.observe(&policy, round, s.flagged, s.admitted, s.outlier_z) {
                if c.to == Standing::Excluded {
                    tracing::warn!(agent = %c.agent, round, "reputation: {}", c.reason);
                } else {
                    tracing::info!(agent = %c.agent, round, "reputation: {}", c.reason);
                }
                changes.push(c);
            }
            touched.push(r.clone());
        }
        self.pending_reputation = touched;
        Ok(changes)
    }
}
