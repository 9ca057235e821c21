//! The model registry: every committed model is a version of its job, with
//! its parent, metrics and ε; the job's head is the version its next round
//! starts from; an operator moves the head back with a rollback.
//!
//! Design decision: a version is not a second record of a model. It *is* a
//! committed round (whose model blob is content-addressed by SHA-256), so its
//! metrics, gate verdict and ε are read from the round and the privacy
//! ledger that recorded them and cannot disagree with them. Only what rounds
//! cannot say, an operator moving the head back, is stored, in an
//! append-only table whose rows name the round they were made after: a
//! round that was in flight then cannot silently undo the rollback.

use rusqlite::{OptionalExtension, TransactionBehavior, params};
use tg_types::record::{FederatedEvaluation, GateVerdict};

use crate::{Result, Store, StoreError, now_ms};

/// One committed model of a job.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ModelVersion {
    /// SHA-256 of its safetensors bytes (its content address).
    pub sha256: String,
    /// The round that committed it.
    pub round: u32,
    /// The version the round started from; `None` for the initial model.
    pub parent_sha256: Option<String>,
    /// Size of its safetensors file in bytes.
    pub bytes: u64,
    /// When it was committed, Unix ms.
    pub created_at_ms: i64,
    /// Held-out accuracy the coordinator measured, if it has a test set.
    pub accuracy: Option<f64>,
    /// Held-out loss the coordinator measured.
    pub loss: Option<f64>,
    /// The job's ε after the round that committed it (DP jobs).
    pub epsilon: Option<f64>,
    /// The agents' federated evaluation of it, when one was scheduled.
    pub federated: Option<FederatedEvaluation>,
    /// The rollout gate's verdict that let it in (gated jobs).
    pub gate: Option<GateVerdict>,
    /// Whether the job's next round starts from it.
    pub head: bool,
}

/// An operator's move of a job's head back to an earlier version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rollback {
    /// Order among the store's rollbacks.
    pub seq: i64,
    /// The job.
    pub job: String,
    /// The version the head moved to.
    pub sha256: String,
    /// The head it replaced (`None`: the job's initial model).
    pub from_sha256: Option<String>,
    /// The last round recorded, staged or charged when it was made; a round
    /// recorded later than this moves the head again.
    pub after_round: u32,
    /// Why, in the operator's words.
    pub reason: String,
    /// Who: an API token's label or the local user.
    pub actor: String,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// Where a job's next round starts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModelHead {
    /// The version's SHA-256.
    pub sha256: String,
    /// The rollback that put it there, if the head is not simply the last
    /// committed model.
    pub rollback: Option<Rollback>,
}

const VERSION_SELECT: &str = "SELECT r.round, r.model_sha256, r.parent_sha256,
        (SELECT bytes FROM models m WHERE m.sha256 = r.model_sha256), r.finished_at_ms,
        r.accuracy, r.loss,
        (SELECT epsilon_after FROM privacy_ledger l WHERE l.job_id = r.job_id AND l.round = r.round),
        r.federated_json, r.gate_json
     FROM rounds r
     WHERE r.job_id = ?1 AND r.status = 'committed' AND r.model_sha256 IS NOT NULL";

fn read_version(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModelVersion> {
    let federated: Option<String> = r.get(8)?;
    let gate: Option<String> = r.get(9)?;
    Ok(ModelVersion {
        round: r.get(0)?,
        sha256: r.get(1)?,
        parent_sha256: r.get(2)?,
        bytes: r.get::<_, Option<i64>>(3)?.unwrap_or(0).max(0) as u64,
        created_at_ms: r.get(4)?,
        accuracy: r.get(5)?,
        loss: r.get(6)?,
        epsilon: r.get(7)?,
        // Informational, as in `rounds`: unreadable JSON is left out.
        federated: federated.and_then(|j| serde_json::from_str(&j).ok()),
        gate: gate.and_then(|j| serde_json::from_str(&j).ok()),
        head: false,
    })
}

fn read_rollback(r: &rusqlite::Row<'_>) -> rusqlite::Result<Rollback> {
    Ok(Rollback {
        seq: r.get(0)?,
        job: r.get(1)?,
        sha256: r.get(2)?,
        from_sha256: r.get(3)?,
        after_round: r.get(4)?,
        reason: r.get(5)?,
        actor: r.get(6)?,
        at_ms: r.get(7)?,
    })
}

/// Why `reason` cannot be a rollback's reason: empty, over 1000 bytes, or
/// holding control or bidirectional-override characters (which would let
/// one operator rewrite what a terminal or a report shows of the record).
pub fn check_reason(reason: &str) -> std::result::Result<(), String> {
    let trimmed = reason.trim();
    if trimmed.is_empty() || trimmed.len() > 1000 {
        return Err("a reason must say why, in 1 to 1000 bytes".into());
    }
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
    if trimmed.chars().any(|c| c.is_control() || bidi(c)) {
        return Err(
            "a reason is one line of plain text (no control or direction-override characters)"
                .into(),
        );
    }
    Ok(())
}

const ROLLBACK_SELECT: &str = "SELECT seq, job_id, sha256, from_sha256, after_round, reason, actor, at_ms FROM model_rollbacks";

/// The head of `job_id` on `conn` (a connection or a transaction).
fn head_on(conn: &rusqlite::Connection, job_id: &str) -> Result<Option<ModelHead>> {
    let committed: Option<(u32, String)> = conn
        .query_row(
            "SELECT round, model_sha256 FROM rounds
             WHERE job_id = ?1 AND status = 'committed' AND model_sha256 IS NOT NULL
             ORDER BY round DESC LIMIT 1",
            [job_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let rollback = conn
        .query_row(
            &format!("{ROLLBACK_SELECT} WHERE job_id = ?1 ORDER BY seq DESC LIMIT 1"),
            [job_id],
            read_rollback,
        )
        .optional()?;
    Ok(match (committed, rollback) {
        // A rollback made after (or while) the last committed round was
        // recorded is the head; a round committed after it moves on.
        (Some((round, _)), Some(rb)) if rb.after_round >= round => Some(ModelHead {
            sha256: rb.sha256.clone(),
            rollback: Some(rb),
        }),
        (None, Some(rb)) => Some(ModelHead {
            sha256: rb.sha256.clone(),
            rollback: Some(rb),
        }),
        (Some((_, sha)), _) => Some(ModelHead {
            sha256: sha,
            rollback: None,
        }),
        (None, None) => None,
    })
}

impl Store {
    /// The version a job's next round starts from: its last committed model,
    /// unless an operator rolled back since. `None` while the job has no
    /// committed model (it starts from its initial one).
    pub fn model_head(&self, job_id: &str) -> Result<Option<ModelHead>> {
        head_on(&self.conn, job_id)
    }

    /// Every version of a job, oldest first, its head marked.
    pub fn model_versions(&self, job_id: &str) -> Result<Vec<ModelVersion>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{VERSION_SELECT} ORDER BY r.round"))?;
        let mut versions = stmt
            .query_map([job_id], read_version)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if let Some(head) = self.model_head(job_id)? {
            // The same bytes may be committed twice; the latest is the head.
            if let Some(v) = versions.iter_mut().rev().find(|v| v.sha256 == head.sha256) {
                v.head = true;
            }
        }
        Ok(versions)
    }

    /// The version of `job_id` whose SHA-256 starts with `prefix` (at least
    /// 6 hex digits); the latest round that committed it.
    pub fn find_version(&self, job_id: &str, prefix: &str) -> Result<ModelVersion> {
        let clean = prefix.trim().to_ascii_lowercase();
        if clean.len() < 6 || clean.len() > 64 || !clean.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NoVersion {
                job: job_id.to_owned(),
                version: prefix.to_owned(),
            });
        }
        let matching: Vec<ModelVersion> = self
            .model_versions(job_id)?
            .into_iter()
            .filter(|v| v.sha256.starts_with(&clean))
            .collect();
        let distinct = {
            let mut shas: Vec<&str> = matching.iter().map(|v| v.sha256.as_str()).collect();
            shas.dedup();
            shas.len()
        };
        match (matching.last(), distinct) {
            (None, _) => Err(StoreError::NoVersion {
                job: job_id.to_owned(),
                version: prefix.to_owned(),
            }),
            (Some(v), 1) => Ok(v.clone()),
            (Some(_), count) => Err(StoreError::Ambiguous {
                prefix: prefix.to_owned(),
                count,
            }),
        }
    }

    /// The `seq` of the job's latest rollback, if any.
    pub fn last_rollback_seq(&self, job_id: &str) -> Result<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MAX(seq) FROM model_rollbacks WHERE job_id = ?1",
            [job_id],
            |r| r.get(0),
        )?)
    }

    /// Every rollback of a job, oldest first.
    pub fn rollbacks(&self, job_id: &str) -> Result<Vec<Rollback>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{ROLLBACK_SELECT} WHERE job_id = ?1 ORDER BY seq"))?;
        stmt.query_map([job_id], read_rollback)?
            .map(|r| r.map_err(StoreError::from))
            .collect()
    }

    /// Moves the head of `job_id` to its version `sha256`, durably and in
    /// one transaction with the checks: the version must be one the job
    /// committed, and not already the head. `audit` sees the rollback before
    /// it commits; when it fails, nothing changes (a rollback that cannot be
    /// audited does not happen). A round recorded after this (trained from
    /// the new head) moves the head on as usual; a round in flight now
    /// does not.
    pub fn rollback_model(
        &mut self,
        job_id: &str,
        sha256: &str,
        reason: &str,
        actor: &str,
        audit: impl FnOnce(&Rollback) -> std::result::Result<(), String>,
    ) -> Result<Rollback> {
        check_reason(reason).map_err(StoreError::Refused)?;
        let reason = reason.trim();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let known: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM rounds WHERE job_id = ?1 AND status = 'committed' AND model_sha256 = ?2)",
            params![job_id, sha256],
            |r| r.get(0),
        )?;
        if !known {
            return Err(StoreError::NoVersion {
                job: job_id.to_owned(),
                version: sha256.to_owned(),
            });
        }
        // The bytes must be there and intact (the blob store checks the
        // digest): a head that cannot be loaded would stop the job.
        self.blobs.get(sha256)?;
        let from = head_on(&tx, job_id)?.map(|h| h.sha256);
        if from.as_deref() == Some(sha256) {
            return Err(StoreError::Refused(format!(
                "version {} is already the head of job {job_id}",
                &sha256[..sha256.len().min(12)]
            )));
        }
        // The latest round the job has touched in any way: recorded, staged
        // (in flight) or paid for in the ledger.
        let after_round: u32 = tx.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(round) FROM rounds WHERE job_id = ?1), 0),
                        COALESCE((SELECT MAX(round) FROM round_stages WHERE job_id = ?1), 0),
                        COALESCE((SELECT MAX(round) FROM privacy_ledger WHERE job_id = ?1), 0))",
            [job_id],
            |r| r.get(0),
        )?;
        let at_ms = now_ms();
        tx.execute(
            "INSERT INTO model_rollbacks(job_id, sha256, from_sha256, after_round, reason, actor, at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![job_id, sha256, from, after_round, reason, actor, at_ms],
        )?;
        let done = Rollback {
            seq: tx.last_insert_rowid(),
            job: job_id.to_owned(),
            sha256: sha256.to_owned(),
            from_sha256: from,
            after_round,
            reason: reason.to_owned(),
            actor: actor.to_owned(),
            at_ms,
        };
        // The audit entry (which names this row's `seq`) is written before
        // the commit: if it cannot be, nothing changes. A crash between the
        // two leaves an entry whose seq the table lacks, never the reverse.
        audit(&done).map_err(StoreError::Unaudited)?;
        tx.commit()?;
        Ok(done)
    }
}
