//! The audit log: append-only, hash-chained, signed.
//!
//! Design decision: one JSON object per line, so `grep`, `jq` and a
//! spreadsheet can read it without us. Each entry carries the hash of the one
//! before it and its own hash — SHA-256 over a domain tag and the canonical
//! JSON (object keys sorted) of its fields — signed with the node's key.
//! Changing, inserting, deleting or reordering an entry breaks a hash or a
//! sequence number; cutting entries off the end is caught by a signed *head*
//! (`audit.head`: last sequence number and hash) written after every append.
//! Who may sign is decided by the log itself: the signer of the first entry,
//! then whoever a `key.rotated` entry signed by an authorised key names —
//! and, when the verifier has the keyring, only inside each key's validity
//! window. Rolling the head back together with the log is the one attack
//! this cannot see alone: auditors record the head hash `audit verify`
//! prints (the compliance report carries it) and check later logs extend it
//! (`--expect-head`).

pub mod event;
mod log;
pub mod report;
mod verify;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use event::AuditEvent;
pub use log::{AuditLog, Head, head_path, parse_entries, read_entries};
pub use verify::{Finding, FindingKind, VerifyOptions, VerifyReport, verify_log, verify_text};

/// Domain tag of entry hashes.
const ENTRY_DOMAIN: &[u8] = b"tensorguard-audit-entry-v1\0";
/// Domain tag of head signatures.
const HEAD_DOMAIN: &[u8] = b"tensorguard-audit-head-v1\0";

/// Event kinds written by TensorGuard.
pub mod kind {
    /// First entry of a log; names the signer.
    pub const LOG_OPENED: &str = "log.opened";
    /// A key was generated.
    pub const KEY_GENERATED: &str = "key.generated";
    /// A key was rotated: body `{purpose, old, new}`.
    pub const KEY_ROTATED: &str = "key.rotated";
    /// A key was revoked.
    pub const KEY_REVOKED: &str = "key.revoked";
    /// A job was created or resumed, with its full configuration.
    pub const JOB_CREATED: &str = "job.created";
    /// Configuration changed.
    pub const CONFIG_CHANGED: &str = "config.changed";
    /// An agent was admitted (with its attestation outcome).
    pub const ADMISSION_ACCEPTED: &str = "admission.accepted";
    /// An agent was refused.
    pub const ADMISSION_REFUSED: &str = "admission.refused";
    /// A round committed: model hash, participants, ε, measurements.
    pub const ROUND_COMMITTED: &str = "round.committed";
    /// A round failed.
    pub const ROUND_FAILED: &str = "round.failed";
    /// A job finished.
    pub const JOB_FINISHED: &str = "job.finished";
    /// An operator asked a job to stop (REST API).
    pub const JOB_STOP_REQUESTED: &str = "job.stop_requested";
    /// An operator logged in to the API.
    pub const API_LOGIN: &str = "api.login";
    /// An API token was created.
    pub const API_TOKEN_CREATED: &str = "api.token_created";
    /// An API token was revoked.
    pub const API_TOKEN_REVOKED: &str = "api.token_revoked";
    /// An operator moved a job's model head back to an earlier version.
    pub const MODEL_ROLLED_BACK: &str = "model.rolled_back";
    /// An operator reinstated an agent that reputation excluded from a job.
    pub const AGENT_REINSTATED: &str = "agent.reinstated";
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Position, from 0, without gaps.
    pub seq: u64,
    /// Unix seconds when it was written.
    pub time: u64,
    /// Event kind (see [`kind`]).
    pub kind: String,
    /// Job the event belongs to, if any.
    pub job: Option<String>,
    /// Ed25519 public key (hex) of the signer.
    pub signer: String,
    /// Event details.
    pub body: Value,
    /// Hash of the previous entry (64 zeros for the first).
    pub prev: String,
    /// This entry's hash.
    pub hash: String,
    /// Ed25519 signature over the hash.
    pub sig: String,
}

/// The clock audit records are stamped with: seconds since the Unix epoch
/// (0 if the system clock is before it).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The hash of an entry's content fields.
pub fn entry_hash(
    seq: u64,
    time: u64,
    kind: &str,
    job: Option<&str>,
    signer: &str,
    body: &Value,
    prev: &str,
) -> [u8; 32] {
    let content = serde_json::json!({
        "seq": seq, "time": time, "kind": kind, "job": job,
        "signer": signer, "body": body, "prev": prev,
    });
    let mut h = Sha256::new();
    h.update(ENTRY_DOMAIN);
    h.update(canonical(&content));
    h.finalize().into()
}

/// JSON with object keys sorted at every level and no whitespace, so the
/// hash does not depend on how a parser orders keys.
pub fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).unwrap_or_default());
                out.push(b':');
                write_canonical(&map[*k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend(serde_json::to_vec(other).unwrap_or_default()),
    }
}

const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"d":2,"c":3}],"x":"s"}}"#).unwrap();
        assert_eq!(
            String::from_utf8(canonical(&a)).unwrap(),
            r#"{"a":{"x":"s","y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn entry_hash_known_answer() {
        let h = entry_hash(
            0,
            1_700_000_000,
            "log.opened",
            None,
            "ab",
            &serde_json::json!({}),
            GENESIS_PREV,
        );
        // Python: hashlib.sha256(b"tensorguard-audit-entry-v1\0" + b'{"body":{},"job":null,"kind":"log.opened","prev":"' + b"0"*64 + b'","seq":0,"signer":"ab","time":1700000000}').hexdigest()
        assert_eq!(hex::encode(h), EXPECTED_GENESIS_HASH);
    }

    const EXPECTED_GENESIS_HASH: &str =
        "e89262e5bc36c6e56bcb79ec975a22096dc95a20be876689a58e0cfa1e201475";
}
