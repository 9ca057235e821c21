//! Bearer-token authentication and role checks.

use axum::http::{HeaderMap, StatusCode, header};
use tg_store::{ApiRole, ApiToken};

use super::{ApiError, ApiState, ErrorBody, with_store};

/// Why a token could not be issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The OS random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Rng(String),
    /// The store refused the token.
    #[error(transparent)]
    Store(#[from] tg_store::StoreError),
}

/// A fresh API token of `role`, valid for `ttl` (forever without one): 64
/// bits of id and 256 of secret from the OS CSPRNG, stored as its digest.
/// The token itself is returned once and never stored.
pub fn issue_token(
    store: &tg_store::Store,
    role: ApiRole,
    label: &str,
    ttl: Option<std::time::Duration>,
) -> Result<(zeroize::Zeroizing<String>, ApiToken), IssueError> {
    let mut id = [0u8; 8];
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut id).map_err(|e| IssueError::Rng(e.to_string()))?;
    getrandom::fill(secret.as_mut()).map_err(|e| IssueError::Rng(e.to_string()))?;
    let token = zeroize::Zeroizing::new(format!(
        "tgapi_{}_{}",
        hex::encode(id),
        hex::encode(secret.as_ref())
    ));
    let rec = store.add_api_token(&token, role, label, ttl.map(|t| t.as_millis() as i64))?;
    Ok((token, rec))
}

/// The refusals every authenticated route can answer with (for OpenAPI).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only its OpenAPI description is used
pub(crate) enum Denied {
    /// No token, or an unknown, revoked or expired one.
    #[response(
        status = 401,
        description = "No bearer token, or an unknown, revoked or expired one"
    )]
    Unauthorized(ErrorBody),
    /// The token's role is too low for the route.
    #[response(
        status = 403,
        description = "The token's role is too low for this route"
    )]
    Forbidden(ErrorBody),
}

/// The token behind a request, if it has at least `min`. Every refusal is
/// logged with the route and the reason (never the token).
pub fn authorize(
    state: &ApiState,
    headers: &HeaderMap,
    route: &str,
    min: ApiRole,
) -> Result<ApiToken, ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(token) = presented else {
        tracing::warn!(route, "API request denied: no bearer token");
        count(state, "unauthenticated");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "no bearer token: send `Authorization: Bearer <token>` (tokens come from `tensorguard api token create`)",
        ));
    };
    let found = with_store(state, |s| {
        s.authenticate_api_token(token).map_err(ApiError::internal)
    })?;
    let Some(tok) = found else {
        tracing::warn!(
            route,
            "API request denied: unknown, revoked or expired token"
        );
        count(state, "unauthenticated");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the token is unknown, revoked or expired",
        ));
    };
    if tok.role < min {
        tracing::warn!(route, token = %tok.id, role = tok.role.as_str(), needed = min.as_str(), "API request denied: role too low");
        count(state, "forbidden");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this route needs the {} role; token {} is {}",
                min.as_str(),
                tok.id,
                tok.role.as_str()
            ),
        ));
    }
    Ok(tok)
}

fn count(state: &ApiState, reason: &str) {
    if let Some(m) = &state.metrics {
        m.api_denied(reason);
    }
}
