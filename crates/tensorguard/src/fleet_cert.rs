//! `keys fleet-root` and `keys certify`: the fleet root that vouches for
//! agents' identities (the format and its checks live in tg-proto).

use std::path::Path;

use ed25519_dalek::SigningKey;
use serde_json::json;
use tg_proto::Certificate;

use crate::errors::{Code, UserError, from_trust, invalid};
use crate::keys::passphrase;
use crate::output::Output;

const LABEL: &str = "tensorguard fleet root";

fn hex32(what: &str, text: &str) -> Result<[u8; 32], UserError> {
    tg_proto::key_from_hex(text).ok_or_else(|| {
        invalid(
            format!("{what} {}", text.trim()),
            "expected 64 hex digits (an Ed25519 public key)",
            "print it with `tensorguard keys export-public` on the agent",
        )
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn create_root(file: &Path, out: &Output) -> Result<(), UserError> {
    if file.exists() {
        return Err(UserError::new(
            Code::AlreadyExists,
            format!("{} exists", file.display()),
            "a fleet root is created once; overwriting it would orphan every certificate",
            "choose another --out, or move the old file away deliberately",
        ));
    }
    let pass = passphrase()?;
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    crate::errors::os_random(secret.as_mut())?;
    let key = SigningKey::from_bytes(&secret);
    let sealed = tg_trust::sealed::seal(
        secret.as_ref(),
        LABEL,
        &pass,
        tg_trust::sealed::KdfParams::default(),
    )
    .map_err(from_trust)?;
    write_private(file, sealed.as_bytes())?;
    let public = hex(&key.verifying_key().to_bytes());
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

fn write_private(file: &Path, bytes: &[u8]) -> Result<(), UserError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| {
        UserError::new(
            Code::DataDirUnwritable,
            format!("cannot write {}", file.display()),
            e.to_string(),
            "choose a writable --out",
        )
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

pub fn certify(
    root: &Path,
    identity: &str,
    name: &str,
    days: u64,
    out: &Output,
) -> Result<(), UserError> {
    let identity = hex32("--identity", identity)?;
    let text = std::fs::read_to_string(root).map_err(|e| {
        invalid(
            format!("--root {}", root.display()),
            e.to_string(),
            "point --root at the file `keys fleet-root` wrote",
        )
    })?;
    let sealed = tg_trust::sealed::SealedFile::parse(&text).map_err(from_trust)?;
    let secret = sealed.open(&passphrase()?).map_err(from_trust)?;
    let bytes: [u8; 32] = secret.as_slice().try_into().map_err(|_| {
        invalid(
            format!("--root {}", root.display()),
            "the sealed secret is not a 32-byte key",
            "use the file `keys fleet-root` wrote",
        )
    })?;
    let key = SigningKey::from_bytes(&bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let cert = Certificate::issue(
        &key,
        identity,
        name,
        now,
        now.saturating_add(days.saturating_mul(86_400)),
    );
    if out.json {
        out.json_value(&json!({
            "certificate": cert.to_text(), "identity": hex(&identity), "name": cert.name,
            "not_before": cert.not_before, "not_after": cert.not_after, "root": hex(&cert.root),
        }));
    } else {
        out.line(&cert.to_text());
    }
    Ok(())
}
