//! `tensorguard keys`, and the node's keys and audit log for other commands.
//!
//! The keyring lives in `<data dir>/keys`, the audit log in
//! `<data dir>/audit/audit.jsonl`. Every key lifecycle event is written to
//! the audit log, signed by the node's audit signer: the active `audit` key
//! (file or HSM) when there is one, else the identity key.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use tg_trust::node;
use tg_trust::{IdentityKey, KeyRecord, KeyStatus, Keyring, Passphrase, Purpose, Storage};

use crate::cli::{KeyPurposeArg, KeysCommand};
use crate::config::Loaded;
use crate::errors::{Code, UserError, from_trust, invalid};
use crate::output::Output;

pub use tg_trust::audit::now_secs;

pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The key passphrase: from the environment (a file, or the variable), else
/// asked for on the terminal without echo, else E043 naming both ways.
pub fn passphrase() -> Result<Passphrase, UserError> {
    ask_passphrase(false)
}

/// A passphrase for a new key: as [`passphrase`], but on a terminal it is
/// asked for twice (as `ssh-keygen` does) and must match.
pub fn new_passphrase() -> Result<Passphrase, UserError> {
    ask_passphrase(true)
}

fn ask_passphrase(confirm: bool) -> Result<Passphrase, UserError> {
    use std::io::IsTerminal;
    if let Some(p) = Passphrase::from_env().map_err(from_trust)? {
        return Ok(p);
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Passphrase::require().map_err(from_trust);
    }
    let prompt = |text: &str| {
        crate::tty::read_secret(text).map_err(|e| {
            UserError::new(
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
            return Err(UserError::new(
                Code::NoPassphrase,
                "the two passphrases differ",
                "a new key's passphrase is typed twice so a typo cannot lock the key away",
                "run the command again and type the same passphrase twice",
            ));
        }
    }
    Passphrase::new(first.to_string()).map_err(from_trust)
}

pub fn keyring(data_dir: &Path) -> Result<Keyring, UserError> {
    node::keyring(data_dir).map_err(from_trust)
}

pub use node::audit_log_path;

fn purpose(p: KeyPurposeArg) -> Purpose {
    match p {
        KeyPurposeArg::Identity => Purpose::Identity,
        KeyPurposeArg::Audit => Purpose::Audit,
    }
}

/// The node's network identity (see [`tg_trust::node::identity`]).
pub fn node_identity(data_dir: &Path, key_file: Option<&Path>) -> Result<IdentityKey, UserError> {
    node::identity(data_dir, key_file, &passphrase()?).map_err(from_trust)
}

fn rotate_after(loaded: &Loaded) -> Result<Option<u64>, UserError> {
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
) -> Result<(), UserError> {
    match cmd {
        KeysCommand::Generate {
            purpose: p,
            pkcs11_module,
            pkcs11_token,
            pkcs11_label,
        } => {
            let p = purpose(p);
            let new = match (pkcs11_module, pkcs11_token) {
                (Some(_), Some(_)) if p == Purpose::Identity => {
                    return Err(invalid(
                        "an identity key cannot live on a PKCS#11 token",
                        "the network handshake (Noise) needs the identity key in process",
                        "keep the identity in the keyring and put the audit key on the token: --purpose audit",
                    ));
                }
                (Some(module), Some(token)) => node::NewKey::Pkcs11 {
                    module,
                    token,
                    label: pkcs11_label.unwrap_or_else(|| format!("tensorguard-{}", p.as_str())),
                },
                _ => node::NewKey::Sealed,
            };
            let rec = node::generate_key(data_dir, p, &passphrase()?, new).map_err(from_trust)?;
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
            let ring = keyring(data_dir)?;
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
            drop(ring);
            let (old, new) = node::rotate_key(data_dir, p, &pass).map_err(from_trust)?;
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
                    UserError::new(
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
            let rec =
                node::revoke_key(data_dir, &id, &reason, &passphrase()?).map_err(from_trust)?;
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
