//! A node's own keys and audit log, as they live under its data directory:
//! the keyring in `keys/`, the audit log in `audit/audit.jsonl`, the
//! network identity, and whoever signs the log.
//!
//! Design decision: one place decides which key a node is and which key
//! signs its audit log — the active `audit` key (file or PKCS#11) when there
//! is one, else the identity key — so the coordinator, the agent and every
//! CLI command sign the same log the same way. A first identity key is
//! generated on first use and its generation is the log's first record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::audit::{AuditLog, kind, now_secs};
use crate::{
    IdentityKey, KeyRecord, Keyring, NodeSigner, Passphrase, Purpose, Result, Storage, TrustError,
};

/// Environment variable holding a PKCS#11 user PIN.
pub const PIN_ENV: &str = "TENSORGUARD_PKCS11_PIN";
/// Environment variable naming a file holding the PIN.
pub const PIN_FILE_ENV: &str = "TENSORGUARD_PKCS11_PIN_FILE";

/// The keyring of the node whose data directory is `data_dir`.
pub fn keyring(data_dir: &Path) -> Result<Keyring> {
    Keyring::open(&data_dir.join("keys"))
}

/// The node's audit log.
pub fn audit_log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit").join("audit.jsonl")
}

/// The token's user PIN: a secret like the key passphrase (zeroized, never
/// from argv), from [`PIN_FILE_ENV`] or [`PIN_ENV`].
pub fn pin() -> Result<Passphrase> {
    if let Some(p) = std::env::var_os(PIN_FILE_ENV).filter(|v| !v.is_empty()) {
        return Passphrase::from_file(Path::new(&p));
    }
    match std::env::var(PIN_ENV) {
        Ok(p) if !p.is_empty() => Passphrase::new(p),
        _ => Err(TrustError::NoPin),
    }
}

/// What the audit log records about a key.
pub fn key_body(rec: &KeyRecord) -> serde_json::Value {
    json!({"id": rec.id, "purpose": rec.purpose, "public_key": rec.public_key, "storage": rec.storage, "not_before": rec.not_before})
}

/// The node's network identity: `key_file` if given (never created
/// implicitly), else the keyring's active identity key, generated (and its
/// generation logged) on first use.
pub fn identity(
    data_dir: &Path,
    key_file: Option<&Path>,
    pass: &Passphrase,
) -> Result<IdentityKey> {
    if let Some(path) = key_file {
        if !path.exists() {
            return Err(TrustError::NoKeyFile(path.to_owned()));
        }
        return IdentityKey::load(path, pass);
    }
    let mut ring = keyring(data_dir)?;
    if let Some(k) = ring.load_active(Purpose::Identity, pass)? {
        return Ok(k);
    }
    let (rec, key) = ring.generate(Purpose::Identity, pass, now_secs())?;
    // The new key signs its own generation (it may be the node's first
    // entry); no second unseal.
    let signer = match ring.active(Purpose::Audit) {
        Some(_) => audit_signer(&ring, pass)?,
        None => Arc::new(key.try_clone()),
    };
    AuditLog::open(&audit_log_path(data_dir), signer, now_secs())
        .and_then(|log| log.append(kind::KEY_GENERATED, None, key_body(&rec), now_secs()))?;
    Ok(key)
}

/// Whoever signs the audit log now, reusing `identity` when it is the signer
/// and already unsealed.
pub fn audit_signer_with(
    ring: &Keyring,
    pass: &Passphrase,
    identity: &IdentityKey,
) -> Result<Arc<dyn NodeSigner>> {
    // Without an audit key, the identity in use (the keyring's, or one from
    // --key-file) signs.
    if ring.active(Purpose::Audit).is_none() {
        Ok(Arc::new(identity.try_clone()))
    } else {
        audit_signer(ring, pass)
    }
}

/// Whoever signs the audit log now: the active audit key, else the active
/// identity key.
pub fn audit_signer(ring: &Keyring, pass: &Passphrase) -> Result<Arc<dyn NodeSigner>> {
    for p in [Purpose::Audit, Purpose::Identity] {
        match ring.active(p).map(|r| r.storage.clone()) {
            Some(Storage::File { file }) => {
                let key = IdentityKey::load(&ring.dir().join(file), pass)?;
                return Ok(Arc::new(key));
            }
            Some(Storage::Pkcs11 {
                module,
                token,
                label,
            }) => {
                let signer =
                    crate::pkcs11::Pkcs11Signer::open(&module, &token, pin()?.expose(), &label)?;
                return Ok(Arc::new(signer));
            }
            None => {}
        }
    }
    Err(TrustError::NoSigner)
}

/// The node's audit log, signed as [`audit_signer_with`] decides (reusing
/// the already unsealed `identity`).
pub fn open_audit_as(
    data_dir: &Path,
    ring: &Keyring,
    pass: &Passphrase,
    identity: &IdentityKey,
) -> Result<AuditLog> {
    AuditLog::open(
        &audit_log_path(data_dir),
        audit_signer_with(ring, pass, identity)?,
        now_secs(),
    )
}

/// The node's audit log, opened with its current signer.
pub fn open_audit(data_dir: &Path, ring: &Keyring, pass: &Passphrase) -> Result<AuditLog> {
    AuditLog::open(
        &audit_log_path(data_dir),
        audit_signer(ring, pass)?,
        now_secs(),
    )
}

/// Appends one event to the node's audit log.
pub fn record(
    data_dir: &Path,
    ring: &Keyring,
    pass: &Passphrase,
    event: &str,
    job: Option<&str>,
    body: serde_json::Value,
) -> Result<()> {
    open_audit(data_dir, ring, pass)?
        .append(event, job, body, now_secs())
        .map(drop)
}

/// Where a new key's secret lives.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NewKey {
    /// Sealed in the keyring under the node's passphrase.
    Sealed,
    /// Generated on a PKCS#11 token (audit keys only: the network handshake
    /// needs the identity key in process).
    Pkcs11 {
        /// The module (`.so`).
        module: PathBuf,
        /// The token's label.
        token: String,
        /// The key's label on the token.
        label: String,
    },
}

/// Generates a key for `purpose` and logs it: the node's current signer
/// vouches for the new key, and a node's very first key signs its own
/// generation.
pub fn generate_key(
    data_dir: &Path,
    purpose: Purpose,
    pass: &Passphrase,
    new: NewKey,
) -> Result<KeyRecord> {
    let mut ring = keyring(data_dir)?;
    let log = if ring.records().is_empty() {
        None
    } else {
        Some(open_audit(data_dir, &ring, pass)?)
    };
    let rec = match new {
        NewKey::Pkcs11 { .. } if purpose == Purpose::Identity => {
            return Err(TrustError::Keyring(
                "an identity key cannot live on a PKCS#11 token (the network handshake needs it in process)".into(),
            ));
        }
        NewKey::Pkcs11 {
            module,
            token,
            label,
        } => {
            let signer =
                crate::pkcs11::Pkcs11Signer::generate(&module, &token, pin()?.expose(), &label)?;
            let storage = Storage::Pkcs11 {
                module,
                token,
                label,
            };
            ring.add_external(purpose, signer.public_key(), storage, now_secs())?
        }
        NewKey::Sealed => ring.generate(purpose, pass, now_secs())?.0,
    };
    match log {
        Some(log) => log
            .append(kind::KEY_GENERATED, None, key_body(&rec), now_secs())
            .map(drop)?,
        None => record(
            data_dir,
            &ring,
            pass,
            kind::KEY_GENERATED,
            None,
            key_body(&rec),
        )?,
    }
    Ok(rec)
}

/// Rotates the active `purpose` key: the old key signs the hand-over, so
/// the log itself authorises the new one. Returns (old, new).
pub fn rotate_key(
    data_dir: &Path,
    purpose: Purpose,
    pass: &Passphrase,
) -> Result<(KeyRecord, KeyRecord)> {
    let mut ring = keyring(data_dir)?;
    let log = open_audit(data_dir, &ring, pass)?;
    let (old, new, _secret) = ring.rotate(purpose, pass, now_secs())?;
    log.append(
        kind::KEY_ROTATED,
        None,
        json!({"purpose": purpose, "old": old.public_key, "new": new.public_key, "old_id": old.id, "new_id": new.id, "at": new.not_before}),
        now_secs(),
    )?;
    Ok((old, new))
}

/// Revokes key `id` for `reason`, and logs it.
pub fn revoke_key(data_dir: &Path, id: &str, reason: &str, pass: &Passphrase) -> Result<KeyRecord> {
    let mut ring = keyring(data_dir)?;
    let rec = ring.revoke(id, reason, now_secs())?;
    record(
        data_dir,
        &ring,
        pass,
        kind::KEY_REVOKED,
        None,
        json!({"id": rec.id, "purpose": rec.purpose, "public_key": rec.public_key, "reason": reason}),
    )?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_gets_one_identity_that_signs_its_log_and_named_keys_are_never_invented() {
        let dir = tempfile::tempdir().unwrap();
        let pass = Passphrase::new("correct horse battery staple".into()).unwrap();
        let missing = dir.path().join("nope.key");
        assert!(matches!(
            identity(dir.path(), Some(&missing), &pass),
            Err(TrustError::NoKeyFile(p)) if p == missing
        ));
        assert!(!missing.exists());
        // First use generates the identity and logs it, signed by itself.
        let first = identity(dir.path(), None, &pass).unwrap();
        let again = identity(dir.path(), None, &pass).unwrap();
        assert_eq!(
            first.signing_key().verifying_key(),
            again.signing_key().verifying_key()
        );
        let entries = crate::audit::read_entries(&audit_log_path(dir.path())).unwrap();
        let generated: Vec<_> = entries
            .iter()
            .filter(|e| e.kind == kind::KEY_GENERATED)
            .collect();
        assert_eq!(generated.len(), 1);
        let logged = hex::encode(first.signing_key().verifying_key().to_bytes());
        assert_eq!(generated[0].signer, logged);
        let ring = keyring(dir.path()).unwrap();
        let signer = audit_signer(&ring, &pass).unwrap();
        assert_eq!(
            signer.public_key(),
            first.signing_key().verifying_key().to_bytes()
        );
        record(dir.path(), &ring, &pass, "test.event", None, json!({})).unwrap();
        let report = crate::audit::verify_log(
            &audit_log_path(dir.path()),
            &crate::audit::VerifyOptions::default(),
        )
        .unwrap();
        assert!(report.ok, "{report:?}");
        // A wrong passphrase opens nothing.
        let wrong = Passphrase::new("wrong horse battery staple".into()).unwrap();
        assert!(identity(dir.path(), None, &wrong).is_err());
    }
}
