//! Reputation in the round: excluded agents are not sampled, down-weighted
//! ones count less, and every screened update moves its agent's standing.
//!
//! Design decision: the store's reputation rows are read at every selection
//! rather than cached, so an operator's reinstatement (written through the
//! API by another connection) takes effect at the next round, and a restarted
//! coordinator resumes with the standing its last round left.

use std::collections::{BTreeMap, BTreeSet};

use tg_types::AgentId;
use tg_types::record::ScreenRecord;
use tg_types::reputation::{Reputation, ReputationChange, Standing};

use crate::{Coordinator, Result, Transport};

impl<T: Transport> Coordinator<'_, T> {
    /// `connected` without the agents reputation excluded; tells the
    /// strategy the down-weighted ones' weights.
    pub(crate) fn eligible(&mut self, connected: Vec<AgentId>) -> Result<Vec<AgentId>> {
        if self.config.reputation.is_none() {
            return Ok(connected);
        }
        let mut weights = BTreeMap::new();
        let mut excluded = BTreeSet::new();
        for r in self.store.reputations(&self.config.job.to_string())? {
            match r.standing {
                Standing::Excluded => {
                    excluded.insert(r.agent);
                }
                _ if r.weight < 1.0 => {
                    weights.insert(r.agent, r.weight);
                }
                _ => {}
            }
        }
        self.strategy.reweigh(&weights);
        Ok(connected
            .into_iter()
            .filter(|a| !excluded.contains(a))
            .collect())
    }

    /// Moves the standing of every agent `round` screened, durably, and
    /// returns the changes (for the round's record and audit entry).
    pub(crate) fn observe_screening(
        &mut self,
        round: u32,
        screened: &[ScreenRecord],
    ) -> Result<Vec<ReputationChange>> {
        let Some(policy) = self.config.reputation else {
            return Ok(Vec::new());
        };
        if screened.is_empty() {
            return Ok(Vec::new());
        }
        let job = self.config.job;
        let mut known: BTreeMap<AgentId, Reputation> = self
            .store
            .reputations(&job.to_string())?
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
        self.store.save_reputations(job, &touched)?;
        Ok(changes)
    }
}
