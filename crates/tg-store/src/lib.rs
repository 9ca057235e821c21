//! Durable state for coordinators and agents: an embedded SQLite database
//! (WAL, `synchronous=FULL`) plus a content-addressed blob store for models.
//!
//! Design decision: a round is committed in one SQLite transaction *after* its
//! model blob is durably on disk (written to a temporary file, fsynced,
//! renamed). A crash at any instant therefore leaves either the whole round or
//! none of it, and every model hash the database names exists on disk. Blobs
//! are named by their SHA-256, so re-writing one is idempotent and reading one
//! verifies it.

mod api_tokens;
mod blobs;
mod fleet;
mod jobs;
mod ledger;
mod process;
pub mod registry;
mod reputation;
mod rounds;
mod schema;
mod settings;

pub use api_tokens::{ApiRole, ApiToken, token_id as api_token_id};
pub use blobs::BlobStore;
pub use fleet::{AdmittedPeer, StageRow};
pub use jobs::{JobRow, NewJob};
pub use process::ProcessStamp;
pub use registry::{ModelHead, ModelVersion, Rollback};
pub use rounds::ModelRow;
pub use settings::SettingsSection;

use std::path::{Path, PathBuf};

use rusqlite::Connection;

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
    /// A job has no committed model with this digest (or prefix).
    #[error("job {job} has no committed model version `{version}`")]
    NoVersion {
        /// The job.
        job: String,
        /// The digest or prefix given.
        version: String,
    },
    /// The request is well-formed but would change nothing or break a rule.
    #[error("{0}")]
    Refused(String),
    /// A change was not made because its audit record could not be written.
    #[error("not done: its audit record could not be written ({0})")]
    Unaudited(String),
    /// Stored data is inconsistent (hash mismatch, unknown enum value, newer schema, …).
    #[error("stored data is corrupt or from a newer version: {0}")]
    Corrupt(String),
}

/// Result alias for this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The store: one SQLite connection and the blob directory.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) blobs: BlobStore,
    dir: PathBuf,
}

pub(crate) fn now_ms() -> i64 {
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
mod registry_tests;
#[cfg(test)]
mod tests;
