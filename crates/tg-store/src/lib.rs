//! Durable state for coordinators and agents: an embedded SQLite database
//! (WAL, `synchronous=FULL`) plus a content-addressed blob store for models.
//!
//! Design decision: a round is committed in one SQLite transaction *after* its
//! model blob is durably on disk (written to a temporary file, fsynced,
//! renamed). A crash at any instant therefore leaves either the whole round or
//! none of it, and every model hash the database names exists on disk. Blobs
//! are named by their SHA-256, so re-writing one is idempotent and reading one
//! verifies it.

mod blobs;
mod process;
mod schema;

pub use blobs::BlobStore;
pub use process::ProcessStamp;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use tg_types::JobId;
use tg_types::record::{
    JobStatus, ParticipantOutcome, ParticipantRecord, RoundRecord, RoundStatus,
};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "tensorguard.db";

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory (or a file in it) cannot be created or written.
    #[error("cannot write to {path}: {source}")]
    Unwritable {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// No job matches.
    #[error("no run matches `{0}`")]
    NotFound(String),
    /// Several jobs match a prefix.
    #[error("`{prefix}` matches {count} runs; give more characters of the id")]
    Ambiguous {
        /// Prefix given.
        prefix: String,
        /// Matches.
        count: usize,
    },
    /// Stored data is inconsistent (hash mismatch, unknown enum value, newer schema, …).
    #[error("stored data is corrupt or from a newer version: {0}")]
    Corrupt(String),
}

/// Result alias for this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A job as listed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobRow {
    /// Id.
    pub id: String,
    /// Kind of job (`demo`, …).
    pub kind: String,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// Status; `running` rows whose process is gone are reported `interrupted`.
    pub status: JobStatus,
    /// Why it failed or stopped.
    pub reason: Option<String>,
    /// Job spec as JSON.
    pub spec: serde_json::Value,
    /// Final summary as JSON (when finished).
    pub summary: Option<serde_json::Value>,
    /// Rounds committed.
    pub rounds_committed: u32,
    /// Rounds failed.
    pub rounds_failed: u32,
    /// Accuracy of the latest committed round.
    pub last_accuracy: Option<f64>,
}

/// A new job to record.
#[derive(Clone, Debug)]
pub struct NewJob<'a> {
    /// Id.
    pub id: JobId,
    /// Kind of job.
    pub kind: &'a str,
    /// Spec as JSON.
    pub spec: &'a serde_json::Value,
}

/// The store: one SQLite connection and the blob directory.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    blobs: BlobStore,
    dir: PathBuf,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Opens (creating if needed) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Unwritable {
            path: dir.to_owned(),
            source,
        })?;
        probe_writable(dir)?;
        let conn = Connection::open(dir.join(DB_FILE))?;
        schema::configure_and_migrate(&conn)?;
        Ok(Self {
            conn,
            blobs: BlobStore::open(&dir.join("blobs"))?,
            dir: dir.to_owned(),
        })
    }

    /// Opens an existing store without creating anything (for readers).
    pub fn open_existing(dir: &Path) -> Result<Self> {
        let db = dir.join(DB_FILE);
        if !db.is_file() {
            return Err(StoreError::NotFound(format!(
                "no TensorGuard database at {}",
                db.display()
            )));
        }
        Self::open(dir)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model blob store.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Records a new running job owned by this process.
    pub fn create_job(&self, job: &NewJob<'_>) -> Result<()> {
        let stamp = ProcessStamp::current();
        self.conn.execute(
            "INSERT INTO jobs(id, kind, created_at_ms, status, spec_json, owner_pid, owner_start)
             VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6)",
            params![
                job.id.to_string(),
                job.kind,
                now_ms(),
                job.spec.to_string(),
                stamp.pid,
                stamp.start_ticks.map(|t| t as i64)
            ],
        )?;
        Ok(())
    }

    /// Durably records a finished round (and its model blob) atomically, and
    /// sets `round.model_sha256` to the stored blob's hash.
    pub fn record_round(
        &mut self,
        job: JobId,
        round: &mut RoundRecord,
        model_safetensors: Option<&[u8]>,
    ) -> Result<()> {
        let sha = match model_safetensors {
            Some(bytes) => Some(self.blobs.put(bytes)?),
            None => None,
        };
        round.model_sha256.clone_from(&sha);
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO rounds(job_id, round, status, accuracy, loss, selected, participants,
                                upload_bytes, download_bytes, duration_ms, reason, model_sha256, finished_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                job.to_string(),
                round.round,
                round.status.as_str(),
                round.accuracy,
                round.loss,
                round.selected,
                round.participants,
                round.upload_bytes as i64,
                round.download_bytes as i64,
                round.duration_ms as i64,
                round.reason,
                sha,
                now_ms()
            ],
        )?;
        if let Some(sha) = &sha {
            tx.execute(
                "INSERT OR IGNORE INTO models(sha256, job_id, round, bytes, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![sha, job.to_string(), round.round, model_safetensors.map_or(0, <[u8]>::len) as i64, now_ms()],
            )?;
        }
        for p in &round.participants_detail {
            tx.execute(
                "INSERT INTO participants(job_id, round, agent_id, outcome, num_examples, train_loss, upload_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.to_string(),
                    round.round,
                    p.agent.as_str(),
                    p.outcome.as_str(),
                    p.num_examples as i64,
                    p.train_loss,
                    p.upload_bytes as i64
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Marks a job finished.
    pub fn finish_job(
        &self,
        job: JobId,
        status: JobStatus,
        reason: Option<&str>,
        summary: &serde_json::Value,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET status = ?2, reason = ?3, summary_json = ?4, finished_at_ms = ?5 WHERE id = ?1",
            params![job.to_string(), status.as_str(), reason, summary.to_string(), now_ms()],
        )?;
        Ok(())
    }

    /// All jobs, newest first.
    pub fn list_jobs(&self) -> Result<Vec<JobRow>> {
        let mut stmt = self
            .conn
            .prepare(&format!("{JOB_SELECT} ORDER BY j.created_at_ms DESC, j.id"))?;
        let rows = stmt
            .query_map([], read_job_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(finish_job_row).collect()
    }

    /// The job whose id is `id_or_prefix` or starts with it.
    pub fn find_job(&self, id_or_prefix: &str) -> Result<JobRow> {
        let clean = id_or_prefix.trim().to_ascii_lowercase();
        if clean.is_empty() || !clean.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::NotFound(id_or_prefix.to_owned()));
        }
        let mut stmt = self.conn.prepare(&format!(
            "{JOB_SELECT} WHERE j.id LIKE ?1 || '%' ORDER BY j.id LIMIT 2"
        ))?;
        let mut rows = stmt
            .query_map([&clean], read_job_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        match rows.len() {
            0 => Err(StoreError::NotFound(id_or_prefix.to_owned())),
            1 => finish_job_row(rows.remove(0)),
            _ => {
                let count: i64 = self.conn.query_row(
                    "SELECT COUNT(*) FROM jobs WHERE id LIKE ?1 || '%'",
                    [&clean],
                    |r| r.get(0),
                )?;
                Err(StoreError::Ambiguous {
                    prefix: id_or_prefix.to_owned(),
                    count: count as usize,
                })
            }
        }
    }

    /// Every recorded round of a job, in order, with participants.
    pub fn rounds(&self, job_id: &str) -> Result<Vec<RoundRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT round, status, accuracy, loss, selected, participants, upload_bytes, download_bytes,
                    duration_ms, reason, model_sha256
             FROM rounds WHERE job_id = ?1 ORDER BY round",
        )?;
        let raw = stmt
            .query_map([job_id], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get(9)?,
                    r.get(10)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut pstmt = self.conn.prepare(
            "SELECT agent_id, outcome, num_examples, train_loss, upload_bytes
             FROM participants WHERE job_id = ?1 AND round = ?2 ORDER BY agent_id",
        )?;
        raw.into_iter()
            .map(
                |(
                    round,
                    status,
                    accuracy,
                    loss,
                    selected,
                    participants,
                    up,
                    down,
                    dur,
                    reason,
                    sha,
                )| {
                    let detail = pstmt
                        .query_map(params![job_id, round], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get(3)?,
                                r.get::<_, i64>(4)?,
                            ))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                        .into_iter()
                        .map(|(agent, outcome, n, loss, up)| {
                            Ok(ParticipantRecord {
                                agent: agent.parse_agent()?,
                                outcome: outcome
                                    .parse::<ParticipantOutcome>()
                                    .map_err(StoreError::Corrupt)?,
                                num_examples: n as u64,
                                train_loss: loss,
                                upload_bytes: up as u64,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(RoundRecord {
                        round,
                        status: status.parse::<RoundStatus>().map_err(StoreError::Corrupt)?,
                        accuracy,
                        loss,
                        selected,
                        participants,
                        upload_bytes: up as u64,
                        download_bytes: down as u64,
                        duration_ms: dur as u64,
                        reason,
                        model_sha256: sha,
                        participants_detail: detail,
                    })
                },
            )
            .collect()
    }

    /// Runs SQLite's integrity check; `Ok(())` when the database is sound.
    pub fn integrity_check(&self) -> Result<()> {
        let result: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if result == "ok" {
            Ok(())
        } else {
            Err(StoreError::Corrupt(result))
        }
    }

    /// The latest committed model of a job, if any: `(round, sha256)`.
    pub fn latest_model(&self, job_id: &str) -> Result<Option<(u32, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT round, model_sha256 FROM rounds
                 WHERE job_id = ?1 AND status = 'committed' AND model_sha256 IS NOT NULL
                 ORDER BY round DESC LIMIT 1",
                [job_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }
}

trait ParseAgent {
    fn parse_agent(&self) -> Result<tg_types::AgentId>;
}

impl ParseAgent for String {
    fn parse_agent(&self) -> Result<tg_types::AgentId> {
        tg_types::AgentId::new(self.clone()).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

const JOB_SELECT: &str = "SELECT j.id, j.kind, j.created_at_ms, j.status, j.reason, j.spec_json, j.summary_json,
        j.owner_pid, j.owner_start,
        (SELECT COUNT(*) FROM rounds r WHERE r.job_id = j.id AND r.status = 'committed'),
        (SELECT COUNT(*) FROM rounds r WHERE r.job_id = j.id AND r.status = 'failed'),
        (SELECT r.accuracy FROM rounds r WHERE r.job_id = j.id AND r.status = 'committed' ORDER BY r.round DESC LIMIT 1)
     FROM jobs j";

type RawJob = (
    String,
    String,
    i64,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<u32>,
    Option<u64>,
    u32,
    u32,
    Option<f64>,
);

fn read_job_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        r.get(9)?,
        r.get(10)?,
        r.get(11)?,
    ))
}

fn finish_job_row(raw: RawJob) -> Result<JobRow> {
    let (id, kind, created, status, reason, spec, summary, pid, start, committed, failed, acc) =
        raw;
    let mut status = status.parse::<JobStatus>().map_err(StoreError::Corrupt)?;
    let mut reason = reason;
    if let (JobStatus::Running, Some(pid)) = (status, pid) {
        let owner = ProcessStamp {
            pid,
            start_ticks: start,
        };
        if owner.is_gone() {
            status = JobStatus::Interrupted;
            reason.get_or_insert_with(|| {
                format!("process {pid} that ran it is gone (crashed or killed)")
            });
        }
    }
    let json = |s: &str| {
        serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("job {id}: {e}")))
    };
    Ok(JobRow {
        spec: json(&spec)?,
        summary: summary.as_deref().map(json).transpose()?,
        id,
        kind,
        created_at_ms: created,
        status,
        reason,
        rounds_committed: committed,
        rounds_failed: failed,
        last_accuracy: acc,
    })
}

/// Fails unless a file can be created in `dir`.
fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|source| StoreError::Unwritable {
        path: dir.to_owned(),
        source,
    })?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

#[cfg(test)]
mod tests;
