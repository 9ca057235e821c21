//! Bearer tokens for the coordinator's REST API.
//!
//! Design decision: a token is `tgapi_<id>_<secret>`. The store keeps the
//! id in the clear (to list, show and revoke tokens) and only the SHA-256 of
//! the whole token; a presented token is looked up by its id and its digest
//! compared in constant time, so neither a database reader nor a timing
//! observer learns a usable token. Roles are ordered: viewer < operator <
//! admin, and a route names the least role it needs.

use rusqlite::{OptionalExtension, params};
use subtle::ConstantTimeEq;

use crate::blobs::sha256_hex;
use crate::{Result, Store, StoreError, now_ms};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiRole {
    /// Read everything.
    Viewer,
    /// Also start and stop jobs, change settings.
    Operator,
    /// Also manage tokens and keys.
    Admin,
}

impl ApiRole {
    /// Lower-case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Viewer => "viewer",
            ApiRole::Operator => "operator",
            ApiRole::Admin => "admin",
        }
    }
}

impl std::str::FromStr for ApiRole {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "viewer" => Ok(ApiRole::Viewer),
            "operator" => Ok(ApiRole::Operator),
            "admin" => Ok(ApiRole::Admin),
            other => Err(StoreError::Corrupt(format!("unknown API role '{other}'"))),
        }
    }
}

/// A token as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    /// Public id.
    pub id: String,
    /// Role.
    pub role: ApiRole,
    /// Operator's label.
    pub label: String,
    /// Created, Unix ms.
    pub created_at_ms: i64,
    /// Expiry, Unix ms.
    pub expires_at_ms: Option<i64>,
    /// Revocation time, Unix ms.
    pub revoked_at_ms: Option<i64>,
    /// Last successful use, Unix ms.
    pub last_used_at_ms: Option<i64>,
}

/// Splits `tgapi_<id>_<secret>`; `None` for anything else.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("tgapi_")?;
    let (id, secret) = rest.split_once('_')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    (id.len() == 16 && secret.len() == 64 && hex(id) && hex(secret)).then_some(id)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ApiToken, String)> {
    let role: String = r.get(1)?;
    Ok((
        ApiToken {
            id: r.get(0)?,
            role: role.parse().unwrap_or(ApiRole::Viewer),
            label: r.get(2)?,
            created_at_ms: r.get(3)?,
            expires_at_ms: r.get(4)?,
            revoked_at_ms: r.get(5)?,
            last_used_at_ms: r.get(6)?,
        },
        r.get(7)?,
    ))
}

const COLUMNS: &str =
    "id, role, label, created_at_ms, expires_at_ms, revoked_at_ms, last_used_at_ms, token_sha256";

impl Store {
    /// Records a new token (made by the caller from the OS CSPRNG).
    pub fn add_api_token(
        &self,
        token: &str,
        role: ApiRole,
        label: &str,
        ttl_ms: Option<i64>,
    ) -> Result<ApiToken> {
        let id =
            token_id(token).ok_or_else(|| StoreError::Corrupt("malformed API token".into()))?;
        let now = now_ms();
        let expires = ttl_ms.map(|t| now.saturating_add(t));
        self.conn.execute(
            "INSERT INTO api_tokens(id, token_sha256, role, label, created_at_ms, expires_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, sha256_hex(token.as_bytes()), role.as_str(), label, now, expires],
        )?;
        Ok(ApiToken {
            id: id.to_owned(),
            role,
            label: label.to_owned(),
            created_at_ms: now,
            expires_at_ms: expires,
            revoked_at_ms: None,
            last_used_at_ms: None,
        })
    }

    /// The token's record if it is genuine, unrevoked and unexpired (and
    /// notes its use); `None` otherwise.
    pub fn authenticate_api_token(&self, token: &str) -> Result<Option<ApiToken>> {
        let Some(id) = token_id(token) else {
            return Ok(None);
        };
        let found = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM api_tokens WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?;
        let Some((tok, digest)) = found else {
            return Ok(None);
        };
        let presented = sha256_hex(token.as_bytes());
        if !bool::from(presented.as_bytes().ct_eq(digest.as_bytes())) {
            return Ok(None);
        }
        let now = now_ms();
        if tok.revoked_at_ms.is_some() || tok.expires_at_ms.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        self.conn.execute(
            "UPDATE api_tokens SET last_used_at_ms = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(Some(ApiToken {
            last_used_at_ms: Some(now),
            ..tok
        }))
    }

    /// Every token, newest first.
    pub fn api_tokens(&self) -> Result<Vec<ApiToken>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM api_tokens ORDER BY created_at_ms DESC, id"
        ))?;
        let rows = stmt.query_map([], row)?;
        Ok(rows
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .map(|(t, _)| t)
            .collect())
    }

    /// Revokes a token by id; false if there is no such unrevoked token.
    pub fn revoke_api_token(&self, id: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE api_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
            params![id, now_ms()],
        )?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(id: &str, fill: char) -> String {
        format!("tgapi_{id}_{}", fill.to_string().repeat(64))
    }

    #[test]
    fn tokens_authenticate_expire_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let t = token("0123456789abcdef", 'a');
        s.add_api_token(&t, ApiRole::Operator, "ops laptop", None)
            .unwrap();
        assert_eq!(
            s.authenticate_api_token(&t).unwrap().unwrap().role,
            ApiRole::Operator
        );
        // Same id, different secret: refused.
        assert!(
            s.authenticate_api_token(&token("0123456789abcdef", 'b'))
                .unwrap()
                .is_none()
        );
        assert!(
            s.authenticate_api_token("Bearer nonsense")
                .unwrap()
                .is_none()
        );
        let expired = token("fedcba9876543210", 'c');
        s.add_api_token(&expired, ApiRole::Admin, "old", Some(-1))
            .unwrap();
        assert!(s.authenticate_api_token(&expired).unwrap().is_none());
        assert!(s.revoke_api_token("0123456789abcdef").unwrap());
        assert!(!s.revoke_api_token("0123456789abcdef").unwrap());
        assert!(s.authenticate_api_token(&t).unwrap().is_none());
        let listed = s.api_tokens().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(ApiRole::Viewer < ApiRole::Operator && ApiRole::Operator < ApiRole::Admin);
        // Only the digest is stored.
        let raw: String = s
            .conn
            .query_row(
                "SELECT token_sha256 FROM api_tokens WHERE id = '0123456789abcdef'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!raw.contains(&"a".repeat(64)));
    }
}
