//! Job rows: creation, completion, listing and lookup by id prefix.

use rusqlite::params;
use tg_types::JobId;
use tg_types::record::JobStatus;

use crate::{ProcessStamp, Result, Store, StoreError, now_ms};

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

impl Store {
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

    /// Takes over a running or interrupted job for this process (a
    /// coordinator resuming after a crash). Refuses a job whose owner still
    /// runs, or one that already finished.
    pub fn reclaim_job(&self, job: JobId) -> Result<()> {
        let row = self.find_job(&job.to_string())?;
        if row.status != tg_types::record::JobStatus::Interrupted {
            return Err(StoreError::Corrupt(format!(
                "job {job} is {}, not interrupted; only an interrupted job can be resumed",
                row.status.as_str()
            )));
        }
        let stamp = ProcessStamp::current();
        self.conn.execute(
            "UPDATE jobs SET status = 'running', owner_pid = ?2, owner_start = ?3 WHERE id = ?1",
            params![
                job.to_string(),
                stamp.pid,
                stamp.start_ticks.map(|t| t as i64)
            ],
        )?;
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
