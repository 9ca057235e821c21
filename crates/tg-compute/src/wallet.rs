//! The worker's wallet: receipts for verified results, stored append-only,
//! exported in a form anyone can verify with the submitters' public keys.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{ComputeError, Receipt};

/// A receipt as exported: hex fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    /// Task id.
    pub task: String,
    /// Submitter's public key.
    pub submitter: String,
    /// Worker's public key.
    pub worker: String,
    /// Output digest.
    pub output_digest: String,
    /// Points.
    pub points: u32,
    /// Issued at, seconds since the Unix epoch.
    pub issued_unix: u64,
    /// Submitter's signature.
    pub sig: String,
}

impl From<&Receipt> for ReceiptRecord {
    fn from(r: &Receipt) -> Self {
        Self {
            task: hex::encode(r.task),
            submitter: hex::encode(r.submitter),
            worker: hex::encode(r.worker),
            output_digest: hex::encode(r.output_digest),
            points: r.points,
            issued_unix: r.issued_unix,
            sig: hex::encode(&r.sig),
        }
    }
}

impl ReceiptRecord {
    /// Back to a receipt, checking field lengths.
    pub fn to_receipt(&self) -> Result<Receipt, ComputeError> {
        fn arr<const N: usize>(s: &str, what: &str) -> Result<[u8; N], ComputeError> {
            hex::decode(s)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    ComputeError::Malformed(format!("receipt field {what} is not {N} hex bytes"))
                })
        }
        Ok(Receipt {
            task: arr(&self.task, "task")?,
            submitter: arr(&self.submitter, "submitter")?,
            worker: arr(&self.worker, "worker")?,
            output_digest: arr(&self.output_digest, "output_digest")?,
            points: self.points,
            issued_unix: self.issued_unix,
            sig: arr::<64>(&self.sig, "sig")?.to_vec(),
        })
    }
}

/// A wallet export: the node's key and every receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalletExport {
    /// The worker's public key (hex).
    pub node: String,
    /// Sum of points.
    pub points: u64,
    /// Receipts, oldest first.
    pub receipts: Vec<ReceiptRecord>,
}

impl WalletExport {
    /// Points by submitter (hex key): a receipt proves only that its submitter
    /// signed it, so a verifier weighs each submitter it knows.
    pub fn by_submitter(&self) -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for r in &self.receipts {
            *m.entry(r.submitter.clone()).or_insert(0) += u64::from(r.points);
        }
        m
    }

    /// Verifies every receipt's signature, that each names this node as worker
    /// and another node as submitter, that no task is paid twice by one
    /// submitter, and that the total adds up. Returns the verified total.
    pub fn verify(&self) -> Result<u64, ComputeError> {
        let mut seen = HashSet::new();
        let mut total = 0u64;
        for (i, rec) in self.receipts.iter().enumerate() {
            let r = rec.to_receipt()?;
            r.verify()
                .map_err(|e| ComputeError::BadSignature(format!("receipt {i}: {e}")))?;
            if rec.worker != self.node {
                return Err(ComputeError::BadSignature(format!(
                    "receipt {i} pays another worker"
                )));
            }
            if !seen.insert((r.task, r.submitter)) {
                return Err(ComputeError::BadSignature(format!(
                    "receipt {i} repeats a paid task"
                )));
            }
            if rec.submitter == self.node {
                return Err(ComputeError::BadSignature(format!(
                    "receipt {i} is issued by the node to itself"
                )));
            }
            total += u64::from(r.points);
        }
        if total != self.points {
            return Err(ComputeError::BadSignature(format!(
                "receipts add up to {total}, not the stated {}",
                self.points
            )));
        }
        Ok(total)
    }
}

/// Receipts on disk, one JSON line each, appended and synced.
#[derive(Debug)]
pub struct Wallet {
    path: PathBuf,
    node: [u8; 32],
    receipts: Vec<ReceiptRecord>,
    seen: HashSet<([u8; 16], [u8; 32])>,
}

impl Wallet {
    /// Opens (or creates) `dir/receipts.jsonl` for the worker `node`.
    pub fn open(dir: &Path, node: [u8; 32]) -> Result<Self, ComputeError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ComputeError::Io(format!("{}: {e}", dir.display())))?;
        let path = dir.join("receipts.jsonl");
        let mut w = Self {
            path,
            node,
            receipts: Vec::new(),
            seen: HashSet::new(),
        };
        if let Ok(text) = std::fs::read_to_string(&w.path) {
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                // A torn last line (crash mid-write) is skipped, never fatal.
                let Ok(rec) = serde_json::from_str::<ReceiptRecord>(line) else {
                    tracing::warn!("wallet line {} unreadable; skipped", n + 1);
                    continue;
                };
                // Only receipts that verify, pay this node and are not repeats count.
                match rec.to_receipt() {
                    Ok(r)
                        if r.verify().is_ok()
                            && r.worker == node
                            && r.submitter != node
                            && w.seen.insert((r.task, r.submitter)) =>
                    {
                        w.receipts.push(rec);
                    }
                    _ => tracing::warn!(
                        "wallet line {} does not verify, pays another node or repeats one; not counted",
                        n + 1
                    ),
                }
            }
        }
        Ok(w)
    }

    /// Stores a receipt after checking it pays this node and is not a repeat.
    /// Returns false for a repeat.
    pub fn append(&mut self, r: &Receipt) -> Result<bool, ComputeError> {
        r.verify()?;
        if r.worker != self.node {
            return Err(ComputeError::BadSignature(
                "the receipt pays another worker".into(),
            ));
        }
        if r.submitter == self.node {
            return Err(ComputeError::BadSignature(
                "a node cannot pay itself".into(),
            ));
        }
        if !self.seen.insert((r.task, r.submitter)) {
            return Ok(false);
        }
        let rec = ReceiptRecord::from(r);
        let mut line = serde_json::to_string(&rec).map_err(|e| ComputeError::Io(e.to_string()))?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| ComputeError::Io(format!("{}: {e}", self.path.display())))?;
        f.write_all(line.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| ComputeError::Io(format!("{}: {e}", self.path.display())))?;
        self.receipts.push(rec);
        Ok(true)
    }

    /// Points earned.
    pub fn balance(&self) -> u64 {
        self.receipts.iter().map(|r| u64::from(r.points)).sum()
    }

    /// Receipts held.
    pub fn len(&self) -> usize {
        self.receipts.len()
    }

    /// Whether it holds no receipt.
    pub fn is_empty(&self) -> bool {
        self.receipts.is_empty()
    }

    /// The export anyone can verify.
    pub fn export(&self) -> WalletExport {
        WalletExport {
            node: hex::encode(self.node),
            points: self.balance(),
            receipts: self.receipts.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn a_node_cannot_pay_itself_and_a_tampered_file_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let me = SigningKey::from_bytes(&[1; 32]);
        let node = me.verifying_key().to_bytes();
        let mut w = Wallet::open(dir.path(), node).unwrap();
        let own = Receipt::issue(&me, [1; 16], node, [0; 32], 5, 1);
        assert!(w.append(&own).is_err());
        let sub = SigningKey::from_bytes(&[2; 32]);
        let good = Receipt::issue(&sub, [2; 16], node, [0; 32], 3, 1);
        assert!(w.append(&good).unwrap());
        assert!(!w.append(&good).unwrap());
        assert_eq!(w.balance(), 3);
        // Lines appended by hand: a forged points value and a duplicate.
        let mut forged = ReceiptRecord::from(&good);
        forged.points = 900;
        forged.task = hex::encode([3u8; 16]);
        let mut text = std::fs::read_to_string(dir.path().join("receipts.jsonl")).unwrap();
        text.push_str(&serde_json::to_string(&forged).unwrap());
        text.push('\n');
        text.push_str(&serde_json::to_string(&ReceiptRecord::from(&good)).unwrap());
        text.push_str("\n{torn");
        std::fs::write(dir.path().join("receipts.jsonl"), text).unwrap();
        let w = Wallet::open(dir.path(), node).unwrap();
        assert_eq!(w.balance(), 3);
        assert_eq!(w.export().verify().unwrap(), 3);
    }
}
