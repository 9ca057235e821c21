//! Agents: who is connected, when we last heard from them, their latency,
//! traffic and attestation outcome.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use serde_json::{Value, json};
use tg_store::ApiRole;

use super::auth::{Denied, authorize};
use super::{ApiError, ApiState};

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new().route("/api/v1/agents", get(list))
}

/// Every agent that joined a job of this coordinator since it started.
#[utoipa::path(get, operation_id = "list_agents", path = "/api/v1/agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, description = "`{\"agents\": [{peer_id, name, job, status, joined_at_ms, last_seen_ms, last_latency_ms, bytes_up, bytes_down, attestation}]}`", body = Value), Denied))]
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, "GET /api/v1/agents", ApiRole::Viewer)?;
    Ok(Json(json!({"agents": state.fleet.snapshot()})))
}
