//! Content-addressed, crash-safe blob files named by SHA-256.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Result, StoreError};

/// Blobs under `<dir>/sha256/<aa>/<hash>`.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn unwritable(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Unwritable {
        path: path.to_owned(),
        source,
    }
}

impl BlobStore {
    /// Opens (creating) the blob directory.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("sha256")).map_err(unwritable(dir))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Path of the blob with this hash (which need not exist).
    pub fn path_of(&self, sha: &str) -> Result<PathBuf> {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Corrupt(format!(
                "`{sha}` is not a SHA-256 hex digest"
            )));
        }
        Ok(self.dir.join("sha256").join(&sha[..2]).join(sha))
    }

    /// Stores `bytes` durably and returns their hash. Idempotent.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path_of(&sha)?;
        if path.is_file() {
            return Ok(sha);
        }
        let parent = path.parent().unwrap_or(&self.dir).to_owned();
        std::fs::create_dir_all(&parent).map_err(unwritable(&parent))?;
        let tmp = parent.join(format!(".{sha}.tmp-{}", std::process::id()));
        {
            let mut f = std::fs::File::create(&tmp).map_err(unwritable(&tmp))?;
            f.write_all(bytes).map_err(unwritable(&tmp))?;
            f.sync_all().map_err(unwritable(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(unwritable(&path))?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&parent) {
            let _ = d.sync_all();
        }
        Ok(sha)
    }

    /// Reads a blob and verifies its hash.
    pub fn get(&self, sha: &str) -> Result<Vec<u8>> {
        let path = self.path_of(sha)?;
        let bytes = std::fs::read(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        if sha256_hex(&bytes) != sha.to_ascii_lowercase() {
            return Err(StoreError::Corrupt(format!(
                "blob {} does not match its hash",
                path.display()
            )));
        }
        Ok(bytes)
    }
}
