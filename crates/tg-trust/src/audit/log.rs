//! Writing the audit log.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Entry, GENESIS_PREV, HEAD_DOMAIN, entry_hash, kind};
use crate::identity::write_private;
use crate::{NodeSigner, Result, TrustError};

/// The signed position of the log's last entry, kept beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Sequence number of the last entry.
    pub seq: u64,
    /// Its hash.
    pub hash: String,
    /// Signer public key (hex).
    pub signer: String,
    /// Signature over the domain tag, `seq` (big-endian) and the hash bytes.
    pub sig: String,
}

impl Head {
    pub(super) fn message(seq: u64, hash: &str) -> Vec<u8> {
        let mut m = HEAD_DOMAIN.to_vec();
        m.extend(seq.to_be_bytes());
        m.extend(hex::decode(hash).unwrap_or_default());
        m
    }
}

/// An audit log open for appending.
pub struct AuditLog {
    path: PathBuf,
    signer: Arc<dyn NodeSigner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.path.display())
    }
}

/// The head file of a log.
pub fn head_path(log: &Path) -> PathBuf {
    log.with_extension("head")
}

impl AuditLog {
    /// Opens `path` for appending with `signer`, creating it (mode 0600)
    /// with a `log.opened` entry when it does not exist yet.
    pub fn open(path: &Path, signer: Arc<dyn NodeSigner>, now: u64) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| TrustError::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let log = Self {
            path: path.to_owned(),
            signer,
        };
        let empty = std::fs::metadata(path)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        if empty {
            log.append(
                kind::LOG_OPENED,
                None,
                serde_json::json!({"format": "tensorguard-audit-v1", "hash": "sha256", "signature": "ed25519"}),
                now,
            )?;
        }
        Ok(log)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Public key of the current signer (hex).
    pub fn signer_hex(&self) -> String {
        hex::encode(self.signer.public_key())
    }

    /// Switches to a new signer (after a rotation was logged by the old one).
    pub fn set_signer(&mut self, signer: Arc<dyn NodeSigner>) {
        self.signer = signer;
    }

    /// Appends one entry: locks the file, reads the tail, writes the line,
    /// syncs it, then replaces the signed head.
    pub fn append(&self, kind: &str, job: Option<&str>, body: Value, time: u64) -> Result<Entry> {
        let io = |source| TrustError::Io {
            path: self.path.clone(),
            source,
        };
        let mut opts = OpenOptions::new();
        opts.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&self.path).map_err(io)?;
        file.lock().map_err(io)?;
        let (seq, prev) = match last_entry(&mut file, &self.path)? {
            Some(e) => (e.seq + 1, e.hash),
            None => (0, GENESIS_PREV.to_owned()),
        };
        let signer = self.signer_hex();
        let hash = hex::encode(entry_hash(seq, time, kind, job, &signer, &body, &prev));
        let sig = hex::encode(
            self.signer
                .sign_bytes(&hex::decode(&hash).unwrap_or_default())?,
        );
        let entry = Entry {
            seq,
            time,
            kind: kind.to_owned(),
            job: job.map(str::to_owned),
            signer: signer.clone(),
            body,
            prev,
            hash,
            sig,
        };
        let mut line = serde_json::to_vec(&entry).map_err(|e| TrustError::Audit(e.to_string()))?;
        line.push(b'\n');
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(io)?;
        let head_sig = hex::encode(self.signer.sign_bytes(&Head::message(seq, &entry.hash))?);
        let head = Head {
            seq,
            hash: entry.hash.clone(),
            signer,
            sig: head_sig,
        };
        let text =
            serde_json::to_vec_pretty(&head).map_err(|e| TrustError::Audit(e.to_string()))?;
        write_private(&head_path(&self.path), &text)?;
        Ok(entry)
    }
}

/// The last complete entry of the file, or `None` for an empty file.
/// A file that ends in a partial line is refused: nothing is appended after
/// bytes we cannot account for.
fn last_entry(file: &mut File, path: &Path) -> Result<Option<Entry>> {
    let io = |source| TrustError::Io {
        path: path.to_owned(),
        source,
    };
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut window = 64 * 1024u64;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut buf = Vec::new();
        Read::take(&mut *file, len - start)
            .read_to_end(&mut buf)
            .map_err(io)?;
        if buf.last() != Some(&b'\n') {
            return Err(TrustError::Audit(format!(
                "{} ends in a partial entry (a crash during a write?); run `tensorguard audit verify` and move the damaged tail aside before appending",
                path.display()
            )));
        }
        let body = &buf[..buf.len() - 1];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(i) => return parse_line(&body[i + 1..], path).map(Some),
            None if start == 0 => return parse_line(body, path).map(Some),
            None => window *= 4,
        }
    }
}

fn parse_line(line: &[u8], path: &Path) -> Result<Entry> {
    serde_json::from_slice(line)
        .map_err(|e| TrustError::Audit(format!("{}: last entry unreadable: {e}", path.display())))
}

/// Reads every entry (for export and reports); fails on the first
/// unreadable line. Use [`super::verify_log`] to check integrity.
pub fn read_entries(path: &Path) -> Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_entries(path, &text)
}

/// The entries of a log's `text` (read from `path`, named in errors).
pub fn parse_entries(path: &Path, text: &str) -> Result<Vec<Entry>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| TrustError::Audit(format!("{}:{}: {e}", path.display(), i + 1)))
        })
        .collect()
}
