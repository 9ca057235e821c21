//! `keys fleet-root` and `keys certify`: the fleet root (tg_trust::fleet_root)
//! that vouches for agents' identities (the certificate is tg-proto's).

use std::path::Path;

use serde_json::json;
use tg_proto::Certificate;
use tg_trust::TrustError;

use crate::errors::{Code, UserError, from_trust, invalid};
use crate::keys::{new_passphrase, now_secs, passphrase};
use crate::output::Output;

pub fn create_root(file: &Path, out: &Output) -> Result<(), UserError> {
    let public = tg_trust::fleet_root::create(file, &new_passphrase()?).map_err(|e| match e {
        TrustError::Exists(_) => UserError::new(
            Code::AlreadyExists,
            format!("{} exists", file.display()),
            "a fleet root is created once; overwriting it would orphan every certificate",
            "choose another --out, or move the old file away deliberately",
        ),
        other => from_trust(other),
    })?;
    let public = hex::encode(public);
    if out.json {
        out.json_value(&json!({"fleet_root": public, "file": file.display().to_string()}));
    } else {
        out.line(&format!("fleet root {public} sealed to {}", file.display()));
        out.line(&format!(
            "agents pin it from the certificate you give them (`keys certify`, then `agent start --certificate`), or in their --policy file: fleet_root = \"{public}\""
        ));
    }
    Ok(())
}

pub fn certify(
    root: &Path,
    identity: &str,
    name: &str,
    days: u64,
    out: &Output,
) -> Result<(), UserError> {
    let identity = tg_proto::key_from_hex(identity).ok_or_else(|| {
        invalid(
            format!("--identity {}", identity.trim()),
            "expected 64 hex digits (an Ed25519 public key)",
            "print it with `tensorguard keys export-public` on the agent",
        )
    })?;
    let key = tg_trust::fleet_root::open(root, &passphrase()?).map_err(|e| match e {
        TrustError::Io { source, .. } => invalid(
            format!("--root {}", root.display()),
            source.to_string(),
            "point --root at the file `keys fleet-root` wrote",
        ),
        other => from_trust(other),
    })?;
    let now = now_secs();
    let until = now.saturating_add(days.saturating_mul(86_400));
    let cert = Certificate::issue(&key, identity, name, now, until);
    if out.json {
        out.json_value(&json!({
            "certificate": cert.to_text(), "identity": hex::encode(identity), "name": cert.name,
            "not_before": cert.not_before, "not_after": cert.not_after, "root": hex::encode(cert.root),
        }));
    } else {
        out.line(&cert.to_text());
    }
    Ok(())
}
