//! Agents' reputation per job: one row per (job, agent), replaced whole.
//!
//! Design decision: the row is the agent's full [`Reputation`] as JSON,
//! written by the coordinator after each screened round and by an
//! operator's reinstatement; the changes of standing are kept with the round
//! (and in the audit log), so this table is a cache of their fold that the
//! coordinator re-reads at every selection (a reinstatement made through the
//! API takes effect at the next round).

use rusqlite::params;
use tg_types::JobId;
use tg_types::reputation::Reputation;

use crate::{Result, Store, StoreError, now_ms};

/// Replaces each agent's row in `tx` (the caller commits).
pub(crate) fn write(
    tx: &rusqlite::Transaction<'_>,
    job: JobId,
    reputations: &[Reputation],
) -> Result<()> {
    for r in reputations {
        let json = serde_json::to_string(r)
            .map_err(|e| StoreError::Corrupt(format!("reputation: {e}")))?;
        tx.execute(
            "INSERT INTO reputation(job_id, agent_id, value_json, updated_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(job_id, agent_id) DO UPDATE SET value_json = excluded.value_json, updated_at_ms = excluded.updated_at_ms",
            params![job.to_string(), r.agent.as_str(), json, now_ms()],
        )?;
    }
    Ok(())
}

impl Store {
    /// Writes `reputations` of `job` (replacing each agent's row) in one
    /// transaction.
    pub fn save_reputations(&mut self, job: JobId, reputations: &[Reputation]) -> Result<()> {
        let tx = self.conn.transaction()?;
        write(&tx, job, reputations)?;
        tx.commit()?;
        Ok(())
    }

    /// Every agent's reputation in `job`, by agent id.
    pub fn reputations(&self, job: &str) -> Result<Vec<Reputation>> {
        let mut stmt = self.conn.prepare(
            "SELECT agent_id, value_json FROM reputation WHERE job_id = ?1 ORDER BY agent_id",
        )?;
        let rows = stmt
            .query_map([job], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(agent, json)| {
                serde_json::from_str(&json).map_err(|e| {
                    StoreError::Corrupt(format!("reputation of {agent} in job {job}: {e}"))
                })
            })
            .collect()
    }

    /// Every agent's reputation in every job: (job id, reputation).
    pub fn all_reputations(&self) -> Result<Vec<(String, Reputation)>> {
        let mut stmt = self.conn.prepare(
            "SELECT job_id, agent_id, value_json FROM reputation ORDER BY job_id, agent_id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(job, agent, json)| {
                let r = serde_json::from_str(&json).map_err(|e| {
                    StoreError::Corrupt(format!("reputation of {agent} in job {job}: {e}"))
                })?;
                Ok((job, r))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tg_types::reputation::{ReputationPolicy, Standing};

    #[test]
    fn reputations_round_trip_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path()).unwrap();
        let job = JobId::from_bytes([7; 16]);
        store
            .create_job(&crate::NewJob {
                id: job,
                kind: "demo",
                spec: &serde_json::json!({}),
            })
            .unwrap();
        let p = ReputationPolicy::default();
        let mut r = Reputation::new(tg_types::AgentId::numbered(3));
        r.observe(&p, 1, true, false, Some(8.0));
        store
            .save_reputations(job, std::slice::from_ref(&r))
            .unwrap();
        r.observe(&p, 2, true, false, Some(8.0));
        r.observe(&p, 3, true, false, Some(8.0));
        store
            .save_reputations(job, std::slice::from_ref(&r))
            .unwrap();
        let back = store.reputations(&job.to_string()).unwrap();
        assert_eq!(back, vec![r]);
        assert_eq!(back[0].standing, Standing::Excluded);
        assert_eq!(store.all_reputations().unwrap().len(), 1);
    }
}
