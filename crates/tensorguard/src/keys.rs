//! `tensorguard keys`, and the node's keys and audit log for other commands.
//!
//! The keyring lives in `<data dir>/keys`, the audit log in
//! `<data dir>/audit/audit.jsonl`. Every key lifecycle event is written to
//! the audit log, signed by the node's audit signer: the active `audit` key
//! (file or HSM) when there is one, else the identity key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use tg_trust::audit::{AuditLog, kind};
use tg_trust::{
    IdentityKey, KeyRecord, KeyStatus, Keyring, NodeSigner, Passphrase, Purpose, Storage,
};

use crate::cli::{KeyPurposeArg, KeysCommand};
use crate::config::Loaded;
use crate::errors::{CliError, Code, from_trust, invalid};
use crate::output::Output;

/// Environment variable holding a PKCS#11 user PIN.
pub const PIN_ENV: &str = "TENSORGUARD_PKCS11_PIN";
/// Environment variable naming a file holding the PIN.
pub const PIN_FILE_ENV: &str = "TENSORGUARD_PKCS11_PIN_FILE";

pub use tg_trust::audit::now_secs;

pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The key passphrase: from the environment (a file, or the variable), else
/// asked for on the terminal without echo, else E043 naming both ways.
pub fn passphrase() -> Result<Passphrase, CliError> {
    ask_passphrase(false)
}

/// A passphrase for a new key: as [`passphrase`], but on a terminal it is
/// asked for twice (as `ssh-keygen` does) and must match.
pub fn new_passphrase() -> Result<Passphrase, CliError> {
    ask_passphrase(true)
}

fn ask_passphrase(confirm: bool) -> Result<Passphrase, CliError> {
    use std::io::IsTerminal;
    if let Some(p) = Passphrase::from_env().map_err(from_trust)? {
        return Ok(p);
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Passphrase::require().map_err(from_trust);
    }
    let prompt = |text: &str| {
        crate::tty::read_secret(text).map_err(|e| {
            CliError::new(
                Code::NoPassphrase,
                "cannot read the passphrase from the terminal",
                e.to_string(),
                format!(
                    "set {} to a file (mode 0600) holding it",
                    tg_trust::passphrase::PASSPHRASE_FILE_ENV
                ),
            )
        })
    };
    let first = prompt(if confirm {
        "New key passphrase (not echoed): "
    } else {
        "Key passphrase (not echoed): "
    })?;
    if confirm {
        let second = prompt("Repeat the passphrase: ")?;
        let same: bool = subtle::ConstantTimeEq::ct_eq(first.as_bytes(), second.as_bytes()).into();
        if !same {
            return Err(CliError::new(
                Code::NoPassphrase,
                "the two passphrases differ",
                "a new key's passphrase is typed twice so a typo cannot lock the key away",
                "run the command again and type the same passphrase twice",
            ));
        }
    }
    Passphrase::new(first.to_string()).map_err(from_trust)
}

pub fn keyring(data_dir: &Path) -> Result<Keyring, CliError> {
    Keyring::open(&data_dir.join("keys")).map_err(from_trust)
}

pub fn audit_log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("audit").join("audit.jsonl")
}

fn purpose(p: KeyPurposeArg) -> Purpose {
    match p {
        KeyPurposeArg::Identity => Purpose::Identity,
        KeyPurposeArg::Audit => Purpose::Audit,
    }
}

/// The token's user PIN: a secret like the key passphrase (zeroized, never
/// from argv), read the same way.
fn pin() -> Result<Passphrase, CliError> {
    if let Some(p) = std::env::var_os(PIN_FILE_ENV).filter(|v| !v.is_empty()) {
        return Passphrase::from_file(Path::new(&p)).map_err(from_trust);
    }
    match std::env::var(PIN_ENV) {
        Ok(p) if !p.is_empty() => Passphrase::new(p).map_err(from_trust),
        _ => Err(CliError::new(
            Code::Keyring,
            "no PKCS#11 PIN",
            "the token's user PIN is needed to use its key",
            format!(
                "set {PIN_FILE_ENV} to a file (mode 0600) holding the PIN, or {PIN_ENV}; never pass it on the command line"
            ),
        )),
    }
}

/// The node's network identity: `key_file` if given, else the keyring's
/// active identity key, generated (and logged) on first use.
pub fn node_identity(data_dir: &Path, key_file: Option<&Path>) -> Result<IdentityKey, CliError> {
    let pass = passphrase()?;
    if let Some(path) = key_file {
        if !path.exists() {
            return Err(CliError::new(
                Code::KeyInvalid,
                format!("identity key {} does not exist", path.display()),
                "a key named on the command line is never created implicitly",
                "create one with `tensorguard init`, or leave out --key-file to use the data dir's keyring",
            ));
        }
        return IdentityKey::load(path, &pass).map_err(from_trust);
    }
    let mut ring = keyring(data_dir)?;
    if let Some(k) = ring
        .load_active(Purpose::Identity, &pass)
        .map_err(from_trust)?
    {
        return Ok(k);
    }
    let (rec, key) = ring
        .generate(Purpose::Identity, &pass, now_secs())
        .map_err(from_trust)?;
    // The new key signs its own generation (it may be the node's first
    // entry); no second unseal.
    let signer = match ring.active(Purpose::Audit) {
        Some(_) => audit_signer(&ring, &pass)?,
        None => Arc::new(key.try_clone()),
    };
    AuditLog::open(&audit_log_path(data_dir), signer, now_secs())
        .and_then(|log| log.append(kind::KEY_GENERATED, None, key_body(&rec), now_secs()))
        .map_err(from_trust)?;
    Ok(key)
}

fn key_body(rec: &KeyRecord) -> serde_json::Value {
    json!({"id": rec.id, "purpose": rec.purpose, "public_key": rec.public_key, "storage": rec.storage, "not_before": rec.not_before})
}

/// Whoever signs the audit log now, reusing `identity` when it is the signer
/// and already unsealed.
pub fn audit_signer_with(
    ring: &Keyring,
    pass: &Passphrase,
    identity: &IdentityKey,
) -> Result<Arc<dyn NodeSigner>, CliError> {
    // Without an audit key, the identity in use (the keyring's, or one from
    // --key-file) signs.
    if ring.active(Purpose::Audit).is_none() {
        Ok(Arc::new(identity.try_clone()))
    } else {
        audit_signer(ring, pass)
    }
}

/// Whoever signs the audit log now.
pub fn audit_signer(ring: &Keyring, pass: &Passphrase) -> Result<Arc<dyn NodeSigner>, CliError> {
    for p in [Purpose::Audit, Purpose::Identity] {
        match ring.active(p).map(|r| r.storage.clone()) {
            Some(Storage::File { file }) => {
                let key = IdentityKey::load(&ring.dir().join(file), pass).map_err(from_trust)?;
                return Ok(Arc::new(key));
            }
            Some(Storage::Pkcs11 {
                module,
                token,
                label,
            }) => {
                let signer =
                    tg_trust::pkcs11::Pkcs11Signer::open(&module, &token, pin()?.expose(), &label)
                        .map_err(from_trust)?;
                return Ok(Arc::new(signer));
            }
            Some(_) | None => {}
        }
    }
    Err(CliError::new(
        Code::Keyring,
        "this node has no key to sign its audit log",
        "the keyring holds no active identity or audit key",
        "run `tensorguard keys generate`",
    ))
}

pub fn open_audit(
    data_dir: &Path,
    ring: &Keyring,
    pass: &Passphrase,
) -> Result<AuditLog, CliError> {
    AuditLog::open(
        &audit_log_path(data_dir),
        audit_signer(ring, pass)?,
        now_secs(),
    )
    .map_err(from_trust)
}

/// Appends one event to the node's audit log.
pub fn record(
    data_dir: &Path,
    ring: &Keyring,
    pass: &Passphrase,
    event: &str,
    job: Option<&str>,
    body: serde_json::Value,
) -> Result<(), CliError> {
    open_audit(data_dir, ring, pass)?
        .append(event, job, body, now_secs())
        .map(drop)
        .map_err(from_trust)
}

fn rotate_after(loaded: &Loaded) -> Result<Option<u64>, CliError> {
    loaded
        .file
        .keys
        .rotate_after
        .as_deref()
        .map(|s| {
            humantime::parse_duration(s)
                .map(|d| d.as_secs())
                .map_err(|e| {
                    invalid(
                        format!("[keys] rotate_after = {s:?}: {e}"),
                        "not a duration",
                        "write it like \"90d\" or \"2160h\"",
                    )
                })
        })
        .transpose()
}

pub fn run(
    cmd: KeysCommand,
    data_dir: &Path,
    loaded: &Loaded,
    out: &Output,
) -> Result<(), CliError> {
    match cmd {
        KeysCommand::Generate {
            purpose: p,
            pkcs11_module,
            pkcs11_token,
            pkcs11_label,
        } => {
            let pass = passphrase()?;
            let mut ring = keyring(data_dir)?;
            let p = purpose(p);
            // The current signer (if any) vouches for the new key; the very
            // first key of a node signs its own generation.
            let log = if ring.records().is_empty() {
                None
            } else {
                Some(open_audit(data_dir, &ring, &pass)?)
            };
            let rec = match (pkcs11_module, pkcs11_token) {
                (Some(module), Some(token)) => {
                    if p == Purpose::Identity {
                        return Err(invalid(
                            "an identity key cannot live on a PKCS#11 token",
                            "the network handshake (Noise) needs the identity key in process",
                            "keep the identity in the keyring and put the audit key on the token: --purpose audit",
                        ));
                    }
                    let label =
                        pkcs11_label.unwrap_or_else(|| format!("tensorguard-{}", p.as_str()));
                    let signer = tg_trust::pkcs11::Pkcs11Signer::generate(
                        &module,
                        &token,
                        pin()?.expose(),
                        &label,
                    )
                    .map_err(from_trust)?;
                    let storage = Storage::Pkcs11 {
                        module,
                        token,
                        label,
                    };
                    ring.add_external(p, signer.public_key(), storage, now_secs())
                        .map_err(from_trust)?
                }
                _ => ring.generate(p, &pass, now_secs()).map_err(from_trust)?.0,
            };
            match log {
                Some(log) => log
                    .append(kind::KEY_GENERATED, None, key_body(&rec), now_secs())
                    .map(drop)
                    .map_err(from_trust)?,
                None => record(
                    data_dir,
                    &ring,
                    &pass,
                    kind::KEY_GENERATED,
                    None,
                    key_body(&rec),
                )?,
            }
            print_record(&rec, out, "generated");
            Ok(())
        }
        KeysCommand::List => {
            let ring = keyring(data_dir)?;
            let max_age = rotate_after(loaded)?;
            let now = now_secs();
            if out.json {
                let keys: Vec<_> = ring
                    .records()
                    .iter()
                    .map(|r| {
                        let mut v = serde_json::to_value(r).unwrap_or_default();
                        v["rotation_due"] = json!(
                            r.status == KeyStatus::Active
                                && max_age.is_some_and(|m| now.saturating_sub(r.not_before) >= m)
                        );
                        v
                    })
                    .collect();
                out.json_value(&json!({"keyring": ring.dir(), "keys": keys}));
                return Ok(());
            }
            if ring.records().is_empty() {
                out.line("no keys yet: `tensorguard keys generate` (or start a coordinator or agent) creates one");
            }
            for r in ring.records() {
                let due = r.status == KeyStatus::Active
                    && max_age.is_some_and(|m| now.saturating_sub(r.not_before) >= m);
                let until = r.not_after.map_or_else(|| "now".to_owned(), rfc3339);
                let where_ = match &r.storage {
                    Storage::File { file } => format!("sealed file {file}"),
                    Storage::Pkcs11 { token, label, .. } => {
                        format!("PKCS#11 token '{token}' label '{label}'")
                    }
                    _ => "other".to_owned(),
                };
                out.line(&format!(
                    "{}  {:<8} {:<8} {} .. {}  {}{}",
                    r.id,
                    r.purpose.as_str(),
                    format!("{:?}", r.status).to_lowercase(),
                    rfc3339(r.not_before),
                    until,
                    where_,
                    if due { "  ROTATION DUE" } else { "" }
                ));
            }
            Ok(())
        }
        KeysCommand::Rotate { purpose: p, if_due } => {
            let p = purpose(p);
            let pass = passphrase()?;
            let mut ring = keyring(data_dir)?;
            if if_due {
                let Some(max_age) = rotate_after(loaded)? else {
                    return Err(invalid(
                        "--if-due needs a schedule",
                        "the config has no [keys] rotate_after",
                        "add `[keys]\\nrotate_after = \"90d\"` to the config",
                    ));
                };
                if !ring.rotation_due(p, max_age, now_secs()) {
                    out.line(&format!("the {} key is not due for rotation", p.as_str()));
                    return Ok(());
                }
            }
            // The old key signs the hand-over, so the log itself authorises the new one.
            let log = open_audit(data_dir, &ring, &pass)?;
            let (old, new, _secret) = ring.rotate(p, &pass, now_secs()).map_err(from_trust)?;
            log.append(
                kind::KEY_ROTATED,
                None,
                json!({"purpose": p, "old": old.public_key, "new": new.public_key, "old_id": old.id, "new_id": new.id, "at": new.not_before}),
                now_secs(),
            )
            .map_err(from_trust)?;
            if out.json {
                out.json_value(&json!({"old": old, "new": new}));
            } else {
                out.line(&format!(
                    "rotated the {} key: {} (retired, still verifies what it signed) → {} (active)",
                    p.as_str(),
                    old.id,
                    new.id
                ));
                if p == Purpose::Identity {
                    out.line("the peer id changed: agents that pin this node by /p2p/<id> need its new address");
                }
            }
            Ok(())
        }
        KeysCommand::ExportPublic { id, purpose: p } => {
            let ring = keyring(data_dir)?;
            let rec = match id {
                Some(id) => ring.find(&id).map_err(from_trust)?.clone(),
                None => ring.active(purpose(p)).cloned().ok_or_else(|| {
                    CliError::new(
                        Code::Keyring,
                        format!("no active {} key", purpose(p).as_str()),
                        "the keyring is empty for that purpose",
                        "run `tensorguard keys generate`",
                    )
                })?,
            };
            let peer_id = hex::decode(&rec.public_key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| tg_net::peer_id_of(&b).ok())
                .map(|p| p.to_string());
            if out.json {
                out.json_value(&json!({"id": rec.id, "purpose": rec.purpose, "public_key": rec.public_key, "peer_id": peer_id, "status": rec.status, "not_before": rec.not_before, "not_after": rec.not_after}));
            } else {
                out.line(&rec.public_key);
            }
            Ok(())
        }
        KeysCommand::Revoke { id, reason } => {
            let pass = passphrase()?;
            let mut ring = keyring(data_dir)?;
            let rec = ring.revoke(&id, &reason, now_secs()).map_err(from_trust)?;
            record(
                data_dir,
                &ring,
                &pass,
                kind::KEY_REVOKED,
                None,
                json!({"id": rec.id, "purpose": rec.purpose, "public_key": rec.public_key, "reason": reason}),
            )?;
            print_record(&rec, out, "revoked");
            Ok(())
        }
        KeysCommand::FleetRoot { out: file } => crate::fleet_cert::create_root(&file, out),
        KeysCommand::Certify {
            root,
            identity,
            name,
            days,
        } => crate::fleet_cert::certify(&root, &identity, &name, days, out),
        KeysCommand::Seal { file } => {
            let pass = passphrase()?;
            let key = IdentityKey::seal_legacy(&file, &pass).map_err(from_trust)?;
            out.line(&format!(
                "sealed {} (public key {})",
                file.display(),
                key.public_hex()
            ));
            Ok(())
        }
    }
}

fn print_record(rec: &KeyRecord, out: &Output, verb: &str) {
    if out.json {
        out.json_value(&serde_json::to_value(rec).unwrap_or_default());
    } else {
        out.line(&format!(
            "{verb} {} key {} (public {})",
            rec.purpose.as_str(),
            rec.id,
            rec.public_key
        ));
    }
}
