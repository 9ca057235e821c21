//! The submitter's task store: every task is written before it is sent, and
//! stays until it is done or has failed with a reason, so a restart resumes
//! whatever was in flight.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tg_tasks::{TaskInput, TaskOutput};

use crate::{ComputeError, Redundancy, TaskId};

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for results.
    Pending,
    /// Verified and done.
    Done,
    /// Given up, with a reason.
    Failed,
}

impl TaskState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

/// A stored task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Id (hex).
    pub id: String,
    /// Its parent, for a fanned-out subtask (hex).
    pub parent: Option<String>,
    /// Position among its parent's subtasks.
    pub index: u32,
    /// Input.
    pub input: TaskInput,
    /// Redundancy asked for.
    pub redundancy: Redundancy,
    /// State.
    pub state: TaskState,
    /// The verified output.
    pub output: Option<TaskOutput>,
    /// Why it failed.
    pub reason: Option<String>,
    /// Workers whose results agreed (public keys, hex).
    pub verified_by: Vec<String>,
    /// Workers whose results disagreed (public keys, hex).
    pub rejected: Vec<String>,
    /// Seconds since the epoch when submitted.
    pub created: f64,
    /// Seconds since the epoch when it ended.
    pub finished: Option<f64>,
}

/// The task store (SQLite, WAL).
#[derive(Debug)]
pub struct TaskStore {
    db: Connection,
}

fn sql(e: rusqlite::Error) -> ComputeError {
    ComputeError::Io(format!("task store: {e}"))
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl TaskStore {
    /// Opens or creates the store at `path`.
    pub fn open(path: &Path) -> Result<Self, ComputeError> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)
                .map_err(|e| ComputeError::Io(format!("{}: {e}", d.display())))?;
        }
        let db = Connection::open(path).map_err(sql)?;
        db.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS tasks (
               id BLOB PRIMARY KEY, parent BLOB, idx INTEGER NOT NULL DEFAULT 0,
               input TEXT NOT NULL, redundancy TEXT NOT NULL, state TEXT NOT NULL,
               output TEXT, reason TEXT, verified_by TEXT NOT NULL DEFAULT '[]',
               rejected TEXT NOT NULL DEFAULT '[]', created REAL NOT NULL, finished REAL);
             CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
             CREATE INDEX IF NOT EXISTS tasks_parent ON tasks(parent);
             CREATE TABLE IF NOT EXISTS standings (worker BLOB PRIMARY KEY, standing TEXT NOT NULL);",
        )
        .map_err(sql)?;
        Ok(Self { db })
    }

    /// Stores a new task (and, for a fanned-out one, its subtasks) in one transaction.
    pub fn insert(
        &mut self,
        id: &TaskId,
        input: &TaskInput,
        r: Redundancy,
        subtasks: &[(TaskId, TaskInput)],
    ) -> Result<(), ComputeError> {
        let tx = self.db.transaction().map_err(sql)?;
        let red = serde_json::to_string(&r).unwrap_or_default();
        let t = now();
        tx.execute(
            "INSERT INTO tasks (id, parent, idx, input, redundancy, state, created) VALUES (?1, NULL, 0, ?2, ?3, 'pending', ?4)",
            params![&id[..], serde_json::to_string(input).unwrap_or_default(), red, t],
        )
        .map_err(sql)?;
        for (i, (sid, sin)) in subtasks.iter().enumerate() {
            tx.execute(
                "INSERT INTO tasks (id, parent, idx, input, redundancy, state, created) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)",
                params![&sid[..], &id[..], i as i64, serde_json::to_string(sin).unwrap_or_default(), red, t],
            )
            .map_err(sql)?;
        }
        tx.commit().map_err(sql)
    }

    /// Marks a task done with its verified output.
    pub fn finish(
        &mut self,
        id: &TaskId,
        output: &TaskOutput,
        verified_by: &[String],
        rejected: &[String],
    ) -> Result<(), ComputeError> {
        self.db
            .execute(
                "UPDATE tasks SET state='done', output=?2, verified_by=?3, rejected=?4, finished=?5 WHERE id=?1 AND state='pending'",
                params![
                    &id[..],
                    serde_json::to_string(output).unwrap_or_default(),
                    serde_json::to_string(verified_by).unwrap_or_default(),
                    serde_json::to_string(rejected).unwrap_or_default(),
                    now()
                ],
            )
            .map_err(sql)?;
        Ok(())
    }

    /// Marks a task failed with a reason (and its pending subtasks with it).
    pub fn fail(&mut self, id: &TaskId, reason: &str) -> Result<(), ComputeError> {
        self.db
            .execute(
                "UPDATE tasks SET state='failed', reason=?2, finished=?3 WHERE (id=?1 OR parent=?1) AND state='pending'",
                params![&id[..], reason, now()],
            )
            .map_err(sql)?;
        Ok(())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRecord> {
        let id: Vec<u8> = r.get(0)?;
        let parent: Option<Vec<u8>> = r.get(1)?;
        let input: String = r.get(3)?;
        let red: String = r.get(4)?;
        let state: String = r.get(5)?;
        let output: Option<String> = r.get(6)?;
        let vb: String = r.get(8)?;
        let rj: String = r.get(9)?;
        let bad = |c: usize| {
            rusqlite::Error::InvalidColumnType(c, "json".into(), rusqlite::types::Type::Text)
        };
        Ok(TaskRecord {
            id: hex::encode(id),
            parent: parent.map(hex::encode),
            index: r.get::<_, i64>(2)? as u32,
            input: serde_json::from_str(&input).map_err(|_| bad(3))?,
            redundancy: serde_json::from_str(&red).map_err(|_| bad(4))?,
            state: TaskState::parse(&state),
            output: output.and_then(|o| serde_json::from_str(&o).ok()),
            reason: r.get(7)?,
            verified_by: serde_json::from_str(&vb).unwrap_or_default(),
            rejected: serde_json::from_str(&rj).unwrap_or_default(),
            created: r.get(10)?,
            finished: r.get(11)?,
        })
    }

    const COLS: &'static str = "id, parent, idx, input, redundancy, state, output, reason, verified_by, rejected, created, finished";

    /// A task by id.
    pub fn get(&self, id: &TaskId) -> Result<Option<TaskRecord>, ComputeError> {
        self.db
            .query_row(
                &format!("SELECT {} FROM tasks WHERE id=?1", Self::COLS),
                params![&id[..]],
                Self::row,
            )
            .optional()
            .map_err(sql)
    }

    /// A task whose hex id starts with `prefix` (at least 6 digits), if exactly one does.
    pub fn find(&self, prefix: &str) -> Result<Option<TaskRecord>, ComputeError> {
        let p = prefix.to_ascii_lowercase();
        if p.len() < 6 || !p.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ComputeError::Malformed(format!(
                "{prefix:?} is not a task id (6 to 32 hex digits)"
            )));
        }
        let mut st = self
            .db
            .prepare(&format!(
                "SELECT {} FROM tasks WHERE hex(id) LIKE ?1",
                Self::COLS
            ))
            .map_err(sql)?;
        let rows: Vec<TaskRecord> = st
            .query_map(params![format!("{}%", p.to_ascii_uppercase())], Self::row)
            .map_err(sql)?
            .filter_map(Result::ok)
            .collect();
        Ok(if rows.len() == 1 {
            rows.into_iter().next()
        } else {
            None
        })
    }

    /// Subtasks of a task, in order.
    pub fn children(&self, id: &TaskId) -> Result<Vec<TaskRecord>, ComputeError> {
        let mut st = self
            .db
            .prepare(&format!(
                "SELECT {} FROM tasks WHERE parent=?1 ORDER BY idx",
                Self::COLS
            ))
            .map_err(sql)?;
        let rows = st
            .query_map(params![&id[..]], Self::row)
            .map_err(sql)?
            .filter_map(Result::ok)
            .collect();
        Ok(rows)
    }

    /// Pending tasks that run on workers (not parents of subtasks), oldest first.
    pub fn pending_leaves(&self) -> Result<Vec<(TaskId, TaskRecord)>, ComputeError> {
        let mut st = self
            .db
            .prepare(&format!(
                "SELECT {} FROM tasks t WHERE state='pending' AND NOT EXISTS (SELECT 1 FROM tasks c WHERE c.parent=t.id) ORDER BY created, idx",
                Self::COLS
            ))
            .map_err(sql)?;
        let rows = st
            .query_map([], Self::row)
            .map_err(sql)?
            .filter_map(Result::ok)
            .filter_map(|r| id_from_hex(&r.id).map(|id| (id, r)))
            .collect();
        Ok(rows)
    }

    /// Stores a worker's standing.
    pub fn save_standing(
        &mut self,
        worker: &[u8; 32],
        st: &crate::Standing,
    ) -> Result<(), ComputeError> {
        self.db
            .execute(
                "INSERT INTO standings (worker, standing) VALUES (?1, ?2) ON CONFLICT(worker) DO UPDATE SET standing=excluded.standing",
                params![&worker[..], serde_json::to_string(st).unwrap_or_default()],
            )
            .map_err(sql)?;
        Ok(())
    }

    /// Every worker's stored standing.
    pub fn standings(
        &self,
    ) -> Result<std::collections::HashMap<[u8; 32], crate::Standing>, ComputeError> {
        let mut st = self
            .db
            .prepare("SELECT worker, standing FROM standings")
            .map_err(sql)?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(sql)?
            .filter_map(Result::ok)
            .filter_map(|(w, j)| {
                Some((
                    <[u8; 32]>::try_from(w).ok()?,
                    serde_json::from_str(&j).ok()?,
                ))
            })
            .collect();
        Ok(rows)
    }

    /// Pending tasks that have subtasks (fanned out), oldest first.
    pub fn pending_parents(&self) -> Result<Vec<TaskId>, ComputeError> {
        let mut st = self
            .db
            .prepare("SELECT id FROM tasks t WHERE state='pending' AND EXISTS (SELECT 1 FROM tasks c WHERE c.parent=t.id) ORDER BY created")
            .map_err(sql)?;
        let rows = st
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(sql)?
            .filter_map(Result::ok)
            .filter_map(|v| v.try_into().ok())
            .collect();
        Ok(rows)
    }

    /// Every task, oldest first.
    pub fn all(&self) -> Result<Vec<TaskRecord>, ComputeError> {
        let mut st = self
            .db
            .prepare(&format!(
                "SELECT {} FROM tasks ORDER BY created, idx",
                Self::COLS
            ))
            .map_err(sql)?;
        let rows = st
            .query_map([], Self::row)
            .map_err(sql)?
            .filter_map(Result::ok)
            .collect();
        Ok(rows)
    }

    /// Counts by state.
    pub fn counts(&self) -> Result<(u64, u64, u64), ComputeError> {
        let c = |s: TaskState| -> Result<u64, ComputeError> {
            self.db
                .query_row(
                    "SELECT count(*) FROM tasks WHERE state=?1 AND parent IS NULL",
                    params![s.as_str()],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as u64)
                .map_err(sql)
        };
        Ok((
            c(TaskState::Pending)?,
            c(TaskState::Done)?,
            c(TaskState::Failed)?,
        ))
    }
}

/// Parses a 32-hex-digit task id.
pub fn id_from_hex(s: &str) -> Option<TaskId> {
    hex::decode(s).ok().and_then(|v| v.try_into().ok())
}
