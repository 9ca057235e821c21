//! The coordinator's durable fleet state: round stage transitions,
//! enrollment tokens and admitted peers.
//!
//! Design decision: a stage transition is committed before the coordinator
//! acts on it, so after a crash the last row says how far the round in flight
//! got. Enrollment tokens are stored only as SHA-256 digests and redeemed by
//! one conditional UPDATE, so a token admits exactly one peer even when two
//! present it at once.

use rusqlite::{OptionalExtension, params};
use tg_types::JobId;
use tg_types::record::RoundStage;

use crate::blobs::sha256_hex;
use crate::{Result, Store, now_ms};

/// The last recorded stage of a job's round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageRow {
    /// Round.
    pub round: u32,
    /// Stage.
    pub stage: RoundStage,
}

/// An admitted peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmittedPeer {
    /// Peer id.
    pub peer_id: String,
    /// Name the agent gave.
    pub name: String,
    /// How it was admitted (`allow-list`, `token`).
    pub via: String,
}

fn parse_stage(s: &str) -> Result<RoundStage> {
    s.parse().map_err(crate::StoreError::Corrupt)
}

impl Store {
    /// Records, durably, that `round` of `job` reached `stage`.
    pub fn record_stage(
        &self,
        job: JobId,
        round: u32,
        stage: RoundStage,
        detail: Option<&str>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO round_stages(job_id, round, stage, detail, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![job.to_string(), round, stage.as_str(), detail, now_ms()],
        )?;
        Ok(())
    }

    /// The most recent stage recorded for `job`.
    pub fn last_stage(&self, job: JobId) -> Result<Option<StageRow>> {
        let row: Option<(u32, String)> = self
            .conn
            .query_row(
                "SELECT round, stage FROM round_stages WHERE job_id = ?1 ORDER BY rowid DESC LIMIT 1",
                params![job.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        row.map(|(round, stage)| {
            Ok(StageRow {
                round,
                stage: parse_stage(&stage)?,
            })
        })
        .transpose()
    }

    /// Every stage recorded for one round, in order.
    pub fn stages(&self, job: JobId, round: u32) -> Result<Vec<RoundStage>> {
        let mut stmt = self.conn.prepare(
            "SELECT stage FROM round_stages WHERE job_id = ?1 AND round = ?2 ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![job.to_string(), round], |r| r.get::<_, String>(0))?;
        rows.map(|s| parse_stage(&s?)).collect::<Result<Vec<_>>>()
    }

    /// Every stage of one round with its time (Unix ms), in order.
    pub fn stage_times(&self, job: JobId, round: u32) -> Result<Vec<(RoundStage, i64)>> {
        let mut stmt = self.conn.prepare(
            "SELECT stage, at_ms FROM round_stages WHERE job_id = ?1 AND round = ?2 ORDER BY rowid",
        )?;
        let rows = stmt.query_map(params![job.to_string(), round], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        rows.map(|row| {
            let (stage, at) = row?;
            Ok((parse_stage(&stage)?, at))
        })
        .collect()
    }

    /// Stores a new one-time enrollment token (only its digest is kept).
    pub fn add_enrollment_token(&self, token: &str, ttl_ms: i64) -> Result<()> {
        let now = now_ms();
        self.conn.execute(
            "INSERT INTO enrollment_tokens(token_sha256, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3)",
            params![sha256_hex(token.as_bytes()), now, now.saturating_add(ttl_ms)],
        )?;
        Ok(())
    }

    /// Redeems a token for `peer_id`: true if it was unused and unexpired
    /// (it is now used up and the peer admitted), false otherwise.
    pub fn redeem_enrollment_token(
        &mut self,
        token: &str,
        peer_id: &str,
        name: &str,
    ) -> Result<bool> {
        let now = now_ms();
        let tx = self.conn.transaction()?;
        let changed = tx.execute(
            "UPDATE enrollment_tokens SET used_by = ?2, used_at_ms = ?3
             WHERE token_sha256 = ?1 AND used_by IS NULL AND expires_at_ms > ?3",
            params![sha256_hex(token.as_bytes()), peer_id, now],
        )?;
        if changed == 1 {
            tx.execute(
                "INSERT OR REPLACE INTO admitted_peers(peer_id, name, via, admitted_at_ms) VALUES (?1, ?2, 'token', ?3)",
                params![peer_id, name, now],
            )?;
        }
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Whether `peer_id` was admitted before (by token or allow-list).
    pub fn admitted(&self, peer_id: &str) -> Result<Option<AdmittedPeer>> {
        Ok(self
            .conn
            .query_row(
                "SELECT peer_id, name, via FROM admitted_peers WHERE peer_id = ?1",
                params![peer_id],
                |r| {
                    Ok(AdmittedPeer {
                        peer_id: r.get(0)?,
                        name: r.get(1)?,
                        via: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::{NewJob, Store};
    use tg_types::JobId;
    use tg_types::record::RoundStage;

    #[test]
    fn a_token_admits_exactly_one_peer_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.add_enrollment_token("secret-token", 60_000).unwrap();
        assert!(!s.redeem_enrollment_token("wrong", "p1", "a").unwrap());
        assert!(
            s.redeem_enrollment_token("secret-token", "p1", "a")
                .unwrap()
        );
        assert!(
            !s.redeem_enrollment_token("secret-token", "p2", "b")
                .unwrap()
        );
        assert_eq!(s.admitted("p1").unwrap().unwrap().via, "token");
        assert!(s.admitted("p2").unwrap().is_none());
        s.add_enrollment_token("stale", -1).unwrap();
        assert!(!s.redeem_enrollment_token("stale", "p3", "c").unwrap());
    }

    #[test]
    fn stages_are_recorded_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let job = JobId::from_bytes([3; 16]);
        s.create_job(&NewJob {
            id: job,
            kind: "t",
            spec: &serde_json::json!({}),
        })
        .unwrap();
        assert_eq!(s.last_stage(job).unwrap(), None);
        s.record_stage(job, 1, RoundStage::Selected, None).unwrap();
        s.record_stage(job, 1, RoundStage::Committed, Some("v1"))
            .unwrap();
        s.record_stage(job, 2, RoundStage::Selected, None).unwrap();
        assert_eq!(s.last_stage(job).unwrap().unwrap().round, 2);
        assert_eq!(
            s.stages(job, 1).unwrap(),
            [RoundStage::Selected, RoundStage::Committed]
        );
        // Each stage's name round-trips.
        for st in RoundStage::ALL {
            assert_eq!(st.as_str().parse::<RoundStage>(), Ok(st));
        }
        assert!("broadcast".parse::<RoundStage>().is_err());
    }
}
