//! Checking an audit log: every entry, the chain, the signers and the head.

use std::collections::HashSet;
use std::path::Path;

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::log::head_path;
use super::{Entry, GENESIS_PREV, Head, entry_hash, kind};
use crate::{KeyRecord, Result, TrustError};

/// What the verifier knows besides the log.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The node's keyring: signers must be in it and sign inside their
    /// validity windows.
    pub keyring: Option<Vec<KeyRecord>>,
    /// A head recorded earlier (seq, hash) that this log must still contain.
    pub expect_head: Option<(u64, String)>,
}

/// Kinds of problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FindingKind {
    /// A line is not a valid entry.
    Malformed,
    /// Sequence numbers skip: entries were deleted.
    Deleted,
    /// A sequence number repeats or goes back: an entry was inserted or moved.
    InsertedOrReordered,
    /// An entry does not name its predecessor's hash.
    ChainBroken,
    /// An entry's content does not match its hash: it was modified.
    Modified,
    /// A signature does not verify.
    BadSignature,
    /// Signed by a key the log never authorised.
    UnauthorizedSigner,
    /// Signed outside the signing key's validity window.
    KeyOutsideWindow,
    /// The log is shorter than its signed head: entries were cut off.
    Truncated,
    /// The head does not match the log or is not validly signed.
    HeadMismatch,
    /// There is no head file.
    HeadMissing,
    /// An expected earlier head is not in the log.
    ExpectedHeadMissing,
    /// Warning: entries after the signed head (crash between write and head update).
    HeadLags,
}

impl FindingKind {
    /// Whether this finding is only a warning.
    pub fn is_warning(self) -> bool {
        matches!(self, FindingKind::HeadLags)
    }
}

/// One problem found.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Finding {
    /// Line number (1-based); 0 for the head.
    pub line: usize,
    /// Sequence number involved, when known.
    pub seq: Option<u64>,
    /// What kind of problem.
    pub kind: FindingKind,
    /// Details.
    pub detail: String,
}

/// The result of [`verify_log`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VerifyReport {
    /// True when there is no finding other than warnings.
    pub ok: bool,
    /// Entries read.
    pub entries: u64,
    /// Hash of the last entry.
    pub last_hash: Option<String>,
    /// Sequence number of the last entry.
    pub last_seq: Option<u64>,
    /// Every key that signed entries (hex).
    pub signers: Vec<String>,
    /// Problems, in log order.
    pub findings: Vec<Finding>,
}

fn sig_ok(signer_hex: &str, msg: &[u8], sig_hex: &str) -> bool {
    let mut pk = [0u8; 32];
    let mut sig = [0u8; 64];
    hex::decode_to_slice(signer_hex, &mut pk).is_ok()
        && hex::decode_to_slice(sig_hex, &mut sig).is_ok()
        && VerifyingKey::from_bytes(&pk)
            .is_ok_and(|k| k.verify(msg, &Signature::from_bytes(&sig)).is_ok())
}

/// Verifies the log at `path` (and its head file).
pub fn verify_log(path: &Path, opts: &VerifyOptions) -> Result<VerifyReport> {
    let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
        path: path.to_owned(),
        source,
    })?;
    verify_text(path, &text, opts)
}

/// [`verify_log`] of the log's `text` as already read from `path` (whose
/// signed head beside it is read now): a caller that also uses the entries
/// reads the file once, so what it shows is what was verified.
pub fn verify_text(path: &Path, text: &str, opts: &VerifyOptions) -> Result<VerifyReport> {
    let mut findings = Vec::new();
    let mut push = |line: usize, seq: Option<u64>, kind: FindingKind, detail: String| {
        findings.push(Finding {
            line,
            seq,
            kind,
            detail,
        });
    };
    let mut expected_seq = 0u64;
    let mut prev: Option<String> = Some(GENESIS_PREV.to_owned());
    let mut authorized: HashSet<String> = HashSet::new();
    let mut ever: Vec<String> = Vec::new();
    let mut hashes: Vec<(u64, String)> = Vec::new();
    let mut entries = 0u64;
    let mut last: Option<Entry> = None;
    if !text.is_empty() && !text.ends_with('\n') {
        push(
            text.lines().count(),
            None,
            FindingKind::Malformed,
            "the last line is incomplete (cut mid-entry)".into(),
        );
    }
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let e: Entry = match serde_json::from_str(raw) {
            Ok(e) => e,
            Err(err) => {
                push(
                    line,
                    None,
                    FindingKind::Malformed,
                    format!("not an audit entry: {err}"),
                );
                prev = None;
                continue;
            }
        };
        entries += 1;
        if e.seq > expected_seq {
            push(
                line,
                Some(e.seq),
                FindingKind::Deleted,
                format!("entries {expected_seq}..={} are missing", e.seq - 1),
            );
        } else if e.seq < expected_seq {
            push(
                line,
                Some(e.seq),
                FindingKind::InsertedOrReordered,
                format!(
                    "sequence number {} after {}",
                    e.seq,
                    expected_seq.saturating_sub(1)
                ),
            );
        }
        if let Some(p) = &prev
            && &e.prev != p
        {
            push(
                line,
                Some(e.seq),
                FindingKind::ChainBroken,
                "does not follow the entry before it (prev hash differs)".into(),
            );
        }
        let recomputed = hex::encode(entry_hash(
            e.seq,
            e.time,
            &e.kind,
            e.job.as_deref(),
            &e.signer,
            &e.body,
            &e.prev,
        ));
        if recomputed != e.hash {
            push(
                line,
                Some(e.seq),
                FindingKind::Modified,
                format!("{} entry's content does not match its hash", e.kind),
            );
        }
        if !sig_ok(&e.signer, &hex::decode(&e.hash).unwrap_or_default(), &e.sig) {
            push(
                line,
                Some(e.seq),
                FindingKind::BadSignature,
                "signature does not verify".into(),
            );
        }
        if line == 1 && opts.keyring.is_none() {
            authorized.insert(e.signer.clone());
        }
        if let Some(ring) = &opts.keyring {
            match ring.iter().find(|k| k.public_key == e.signer) {
                None => push(
                    line,
                    Some(e.seq),
                    FindingKind::UnauthorizedSigner,
                    format!("signer {} is not in the keyring", short(&e.signer)),
                ),
                Some(k) if !k.valid_at(e.time) => push(
                    line,
                    Some(e.seq),
                    FindingKind::KeyOutsideWindow,
                    format!(
                        "key {} ({:?}) did not sign at time {}",
                        k.id, k.status, e.time
                    ),
                ),
                Some(_) => {}
            }
        } else if !authorized.contains(&e.signer) {
            push(
                line,
                Some(e.seq),
                FindingKind::UnauthorizedSigner,
                format!(
                    "signer {} was never authorised by the log",
                    short(&e.signer)
                ),
            );
        }
        if !ever.contains(&e.signer) {
            ever.push(e.signer.clone());
        }
        if authorized.contains(&e.signer) {
            let field = |k: &str| e.body.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            match e.kind.as_str() {
                kind::KEY_ROTATED => {
                    if let (Some(old), Some(new)) = (field("old"), field("new"))
                        && authorized.remove(&old)
                    {
                        authorized.insert(new);
                    }
                }
                kind::KEY_GENERATED if field("purpose").as_deref() == Some("audit") => {
                    if let Some(k) = field("public_key") {
                        authorized.insert(k);
                    }
                }
                kind::KEY_REVOKED => {
                    if let Some(k) = field("public_key") {
                        authorized.remove(&k);
                    }
                }
                _ => {}
            }
        }
        expected_seq = expected_seq.max(e.seq + 1);
        prev = Some(e.hash.clone());
        hashes.push((e.seq, e.hash.clone()));
        last = Some(e);
    }
    check_head(path, last.as_ref(), &hashes, &ever, &mut push);
    if let Some((seq, hash)) = &opts.expect_head
        && !hashes.iter().any(|(s, h)| s == seq && h == hash)
    {
        push(
            0,
            Some(*seq),
            FindingKind::ExpectedHeadMissing,
            format!(
                "the recorded head {seq}:{} is not in this log (rolled back or rewritten)",
                short(hash)
            ),
        );
    }
    let ok = findings.iter().all(|f| f.kind.is_warning());
    Ok(VerifyReport {
        ok,
        entries,
        last_hash: last.as_ref().map(|e| e.hash.clone()),
        last_seq: last.as_ref().map(|e| e.seq),
        signers: ever,
        findings,
    })
}

fn check_head(
    path: &Path,
    last: Option<&Entry>,
    hashes: &[(u64, String)],
    signers: &[String],
    push: &mut impl FnMut(usize, Option<u64>, FindingKind, String),
) {
    let hp = head_path(path);
    let head: Head = match std::fs::read_to_string(&hp).map(|t| serde_json::from_str(&t)) {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            return push(
                0,
                None,
                FindingKind::HeadMismatch,
                format!("{} is unreadable: {e}", hp.display()),
            );
        }
        Err(_) => {
            return push(
                0,
                None,
                FindingKind::HeadMissing,
                format!(
                    "{} is missing: truncation cannot be ruled out",
                    hp.display()
                ),
            );
        }
    };
    if !signers.contains(&head.signer)
        || !sig_ok(
            &head.signer,
            &Head::message(head.seq, &head.hash),
            &head.sig,
        )
    {
        return push(
            0,
            Some(head.seq),
            FindingKind::HeadMismatch,
            "the head's signature does not verify with any of the log's signers".into(),
        );
    }
    let Some(last) = last else {
        return push(
            0,
            Some(head.seq),
            FindingKind::Truncated,
            format!(
                "the log is empty but its signed head says entry {} exists",
                head.seq
            ),
        );
    };
    if head.seq > last.seq {
        push(
            0,
            Some(head.seq),
            FindingKind::Truncated,
            format!(
                "the log ends at entry {} but its signed head says {}: entries were cut off",
                last.seq, head.seq
            ),
        );
    } else if !hashes
        .iter()
        .any(|(s, h)| *s == head.seq && *h == head.hash)
    {
        push(
            0,
            Some(head.seq),
            FindingKind::HeadMismatch,
            format!(
                "entry {} does not have the hash the signed head records",
                head.seq
            ),
        );
    } else if head.seq < last.seq {
        push(
            0,
            Some(head.seq),
            FindingKind::HeadLags,
            format!(
                "{} entries after the signed head (a crash between write and head update?)",
                last.seq - head.seq
            ),
        );
    }
}

fn short(h: &str) -> &str {
    &h[..h.len().min(16)]
}
