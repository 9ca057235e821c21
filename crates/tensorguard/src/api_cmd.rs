//! `tensorguard api token create|list|revoke`.

use std::path::Path;

use serde_json::json;
use tg_store::{ApiRole, Store};
use tg_trust::audit::kind;

use crate::cli::{ApiCommand, RoleArg, TokenCommand};
use crate::errors::{Code, UserError, from_store};
use crate::keys::rfc3339;
use crate::output::Output;

fn role(r: RoleArg) -> ApiRole {
    match r {
        RoleArg::Viewer => ApiRole::Viewer,
        RoleArg::Operator => ApiRole::Operator,
        RoleArg::Admin => ApiRole::Admin,
    }
}

/// Records a token event in the node's audit log when the node has keys;
/// a node without a keyring yet has no audit log to write to.
fn audit(data_dir: &Path, event: &str, body: serde_json::Value) -> Result<(), UserError> {
    if !data_dir.join("keys").join("keyring.json").exists() {
        return Ok(());
    }
    let pass = crate::keys::passphrase()?;
    let ring = crate::keys::keyring(data_dir)?;
    tg_trust::node::record(data_dir, &ring, &pass, event, None, body)
        .map_err(crate::errors::from_trust)
}

/// A fresh token of `role` (from the OS CSPRNG), stored as its digest;
/// the token itself is returned once.
pub fn new_token(
    store: &Store,
    data_dir: &Path,
    role: ApiRole,
    label: &str,
    ttl: Option<std::time::Duration>,
) -> Result<(zeroize::Zeroizing<String>, tg_store::ApiToken), UserError> {
    tg_coordinator::api::auth::issue_token(store, role, label, ttl).map_err(|e| match e {
        tg_coordinator::api::auth::IssueError::Store(e) => from_store(e, data_dir),
        other => UserError::new(
            crate::errors::Code::Internal,
            "cannot issue an API token",
            other.to_string(),
            "check /dev/urandom",
        ),
    })
}

pub fn run(cmd: ApiCommand, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let store = Store::open(data_dir).map_err(|e| from_store(e, data_dir))?;
    match cmd {
        ApiCommand::Token(TokenCommand::Create {
            role: r,
            label,
            ttl,
        }) => {
            let (token, rec) = new_token(&store, data_dir, role(r), &label, ttl)?;
            audit(
                data_dir,
                kind::API_TOKEN_CREATED,
                json!({"id": rec.id, "role": rec.role.as_str(), "label": rec.label, "expires_at_ms": rec.expires_at_ms}),
            )?;
            if out.json {
                out.json_value(&json!({"token": token.as_str(), "id": rec.id, "role": rec.role.as_str(), "expires_at_ms": rec.expires_at_ms}));
            } else {
                out.line(&token);
                out.note(&format!(
                    "{} token {} — shown once, only its SHA-256 is stored; send it as `Authorization: Bearer <token>`",
                    rec.role.as_str(),
                    rec.id
                ));
            }
            Ok(())
        }
        ApiCommand::Token(TokenCommand::List) => {
            let tokens = store.api_tokens().map_err(|e| from_store(e, data_dir))?;
            let ms = |v: Option<i64>| v.map(|m| rfc3339((m / 1000).max(0) as u64));
            if out.json {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| json!({"id": t.id, "role": t.role.as_str(), "label": t.label, "created": ms(Some(t.created_at_ms)), "expires": ms(t.expires_at_ms), "last_used": ms(t.last_used_at_ms), "revoked": ms(t.revoked_at_ms)}))
                    .collect();
                out.json_value(&json!({"tokens": rows}));
                return Ok(());
            }
            if tokens.is_empty() {
                out.line(
                    "no API tokens: `tensorguard api token create --role viewer|operator|admin`",
                );
            }
            for t in &tokens {
                let state = match (t.revoked_at_ms, ms(t.expires_at_ms)) {
                    (Some(_), _) => "revoked".to_owned(),
                    (None, Some(e)) => format!("expires {e}"),
                    (None, None) => "no expiry".to_owned(),
                };
                out.line(&format!(
                    "{}  {:<8} {:<20} created {}  last used {}  {state}",
                    t.id,
                    t.role.as_str(),
                    t.label,
                    ms(Some(t.created_at_ms)).unwrap_or_default(),
                    ms(t.last_used_at_ms).unwrap_or_else(|| "never".into()),
                ));
            }
            Ok(())
        }
        ApiCommand::Token(TokenCommand::Revoke { id }) => {
            if !store
                .revoke_api_token(&id)
                .map_err(|e| from_store(e, data_dir))?
            {
                return Err(UserError::new(
                    Code::InvalidValue,
                    format!("no active API token with id {id}"),
                    "it does not exist or is already revoked",
                    "see `tensorguard api token list`",
                ));
            }
            audit(data_dir, kind::API_TOKEN_REVOKED, json!({"id": id}))?;
            out.line(&format!("revoked API token {id}"));
            Ok(())
        }
    }
}
