//! The audit log: search it, export it (the exact signed lines, so an
//! export stays verifiable with `tensorguard audit verify`).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tg_store::ApiRole;

use super::auth::{Denied, authorize};
use super::{ApiError, ApiState, ErrorBody};

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/api/v1/audit", get(query))
        .route("/api/v1/audit/export", get(export))
}

/// Most entries one query returns.
const MAX_LIMIT: usize = 1000;

/// The log's non-empty lines with their parsed entries, oldest first.
fn lines(state: &ApiState) -> Result<Vec<(String, tg_trust::audit::Entry)>, ApiError> {
    let Some(path) = &state.audit_log else {
        return Ok(Vec::new());
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ApiError::internal(format!("{}: {e}", path.display()))),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map(|e| (l.to_owned(), e))
                .map_err(|e| {
                    ApiError::internal(format!(
                        "{}:{}: {e} (run `tensorguard audit verify`)",
                        path.display(),
                        i + 1
                    ))
                })
        })
        .collect()
}

fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

fn number(q: &HashMap<String, String>, key: &str, default: u32) -> Result<usize, ApiError> {
    // Unlike the text filters, an empty number is an error, not "absent".
    match q.get(key).map(String::as_str) {
        None => Ok(default as usize),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| i32::try_from(*n).is_ok())
            .map(|n| n as usize)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{key}={v}` is not a whole number from 0 to {}",
                    i32::MAX
                ))
            }),
    }
}

/// Searches the audit log, newest first.
#[utoipa::path(get, operation_id = "query_audit", path = "/api/v1/audit", tag = "audit", security(("bearer" = [])),
    params(
        ("q" = Option<String>, Query, description = "Case-insensitive text to find anywhere in an entry"),
        ("kind" = Option<String>, Query, description = "Exact event kind, e.g. `round.committed`"),
        ("job" = Option<String>, Query, description = "Job id or prefix"),
        ("limit" = Option<u32>, Query, minimum = 0, maximum = 1000, description = "At most this many entries (default 100, max 1000)"),
        ("offset" = Option<u32>, Query, minimum = 0, maximum = 2147483647, description = "Skip this many matching entries")),
    responses((status = 200, description = "`{\"total\", \"entries\": [entry]}`", body = Value),
        (status = 400, description = "A bad parameter", body = ErrorBody), Denied))]
pub(super) async fn query(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, "GET /api/v1/audit", ApiRole::Viewer)?;
    let limit = number(&q, "limit", 100)?;
    if limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit={limit} is more than {MAX_LIMIT}; page with offset"
        )));
    }
    let offset = number(&q, "offset", 0)?;
    let needle = param(&q, "q").map(str::to_lowercase);
    let kind = param(&q, "kind");
    let job = param(&q, "job");
    let matching: Vec<_> = lines(&state)?
        .into_iter()
        .rev()
        .filter(|(line, e)| {
            kind.is_none_or(|k| e.kind == k)
                && job.is_none_or(|j| e.job.as_deref().is_some_and(|ej| ej.starts_with(j)))
                && needle
                    .as_deref()
                    .is_none_or(|n| line.to_lowercase().contains(n))
        })
        .collect();
    let total = matching.len();
    let entries: Vec<_> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(_, e)| e)
        .collect();
    Ok(Json(json!({"total": total, "entries": entries})))
}

/// The log's entries as JSON lines, exactly as signed (optionally one job's).
#[utoipa::path(get, operation_id = "export_audit", path = "/api/v1/audit/export", tag = "audit", security(("bearer" = [])),
    params(("job" = Option<String>, Query, description = "Only this job's entries (id or prefix)")),
    responses((status = 200, description = "JSON lines", content_type = "application/x-ndjson", body = String), Denied))]
pub(super) async fn export(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let token = authorize(
        &state,
        &headers,
        "GET /api/v1/audit/export",
        ApiRole::Operator,
    )?;
    let job = param(&q, "job");
    let mut out = String::new();
    for (line, e) in lines(&state)? {
        if job.is_none_or(|j| e.job.as_deref().is_some_and(|ej| ej.starts_with(j))) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    tracing::info!(token = %token.id, job = job.unwrap_or("*"), "audit log exported through the API");
    let mut response = out.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit.jsonl\""),
    );
    Ok(response)
}
