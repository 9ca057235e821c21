//! Agents: who is connected, when we last heard from them, their latency,
//! traffic, attestation outcome and reputation; an operator's reinstatement
//! of an agent that reputation excluded.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tg_store::ApiRole;
use tg_types::reputation::{Reputation, Standing};
use utoipa::ToSchema;

use super::auth::{Denied, authorize};
use super::jobs::not_found;
use super::{ApiError, ApiState, ErrorBody};

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/api/v1/agents", get(list))
        .route(
            "/api/v1/jobs/{id}/agents/{agent}/reinstate",
            post(reinstate),
        )
}

/// An agent's reputation as the API shows it: its last score (a function of
/// its update) only to operators.
fn reputation_json(r: &Reputation, role: ApiRole) -> Value {
    let mut v = json!({
        "standing": r.standing,
        "weight": r.weight,
        "screened": r.screened,
        "flagged": r.flagged,
        "filtered": r.filtered,
        "last_round": r.last_round,
        "since_round": r.since_round,
    });
    if role >= ApiRole::Operator {
        v["last_score"] = json!(r.last_score);
    }
    v
}

/// Every agent that joined a job of this coordinator since it started, with
/// its reputation in that job (jobs with reputation), and agents a job's
/// reputation knows that are not connected now.
#[utoipa::path(get, operation_id = "list_agents", path = "/api/v1/agents", tag = "agents", security(("bearer" = [])),
    responses((status = 200, description = "`{\"agents\": [{peer_id, name, job, status, joined_at_ms, last_seen_ms, last_latency_ms, bytes_up, bytes_down, attestation, reputation: {standing, weight, screened, flagged, filtered, last_round, since_round, last_score (operators)} | null}]}`", body = Value), Denied))]
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(&state, &headers, "GET /api/v1/agents", ApiRole::Viewer)?;
    let mut reputations: std::collections::BTreeMap<(String, String), Reputation> =
        super::with_store(&state, |s| s.all_reputations().map_err(ApiError::internal))?
            .into_iter()
            .map(|(job, r)| ((job, r.agent.to_string()), r))
            .collect();
    let mut agents: Vec<Value> = state
        .fleet
        .snapshot()
        .into_iter()
        .map(|a| {
            let r = reputations.remove(&(a.job.clone(), a.peer_id.clone()));
            let mut v = serde_json::to_value(&a).unwrap_or(Value::Null);
            v["reputation"] = r.map_or(Value::Null, |r| reputation_json(&r, token.role));
            v
        })
        .collect();
    // Known to a job's reputation, not connected to this process now.
    for ((job, agent), r) in reputations {
        agents.push(json!({
            "peer_id": agent,
            "name": null,
            "job": job,
            "status": "unknown",
            "reputation": reputation_json(&r, token.role),
        }));
    }
    Ok(Json(json!({"agents": agents})))
}

/// Why an operator reinstates an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reinstate {
    /// Why (kept in the audit log), 1 to 1000 characters.
    pub reason: String,
}

/// Reinstates an agent that reputation excluded from a job: good standing,
/// full weight, an empty window; it may be sampled from the job's next
/// round. Audited before it takes effect.
#[utoipa::path(post, operation_id = "reinstate_agent", path = "/api/v1/jobs/{id}/agents/{agent}/reinstate", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix"),
           ("agent" = String, Path, description = "The agent's peer id")),
    request_body = Reinstate,
    responses((status = 200, description = "`{\"job\", \"agent\", \"reputation\"}`", body = Value),
        (status = 400, description = "No reason given", body = ErrorBody),
        (status = 404, description = "No such job, or the job keeps no reputation for this agent", body = ErrorBody),
        (status = 409, description = "The agent is not excluded", body = ErrorBody),
        (status = 503, description = "No audit log to record the reinstatement", body = ErrorBody), Denied))]
pub(super) async fn reinstate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((id, agent)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(
        &state,
        &headers,
        "POST /api/v1/jobs/{id}/agents/{agent}/reinstate",
        ApiRole::Operator,
    )?;
    let body: Reinstate = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"reason\": \"…\"}} (JSON): {e}"
        ))
    })?;
    tg_store::registry::check_reason(&body.reason).map_err(ApiError::bad_request)?;
    let reason = body.reason.trim();
    let audit = state.audit.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "agents cannot be reinstated here: this server has no audit log to record it in",
        )
    })?;
    let mut store = state
        .store
        .lock()
        .map_err(|_| ApiError::internal("store lock poisoned"))?;
    let job = store.find_job(&id).map_err(not_found)?;
    let policy: tg_types::reputation::ReputationPolicy = job
        .spec
        .get("reputation")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("job {} keeps no reputation (its spec has none)", job.id),
            )
        })?;
    let mut r = store
        .reputations(&job.id)
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|r| r.agent.as_str() == agent)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("job {} has no reputation for agent `{agent}`", job.id),
            )
        })?;
    if r.standing != Standing::Excluded {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "agent `{agent}` is not excluded from job {} (it is {})",
                job.id, r.standing
            ),
        ));
    }
    let change = r.reinstate(&policy, reason);
    let job_id: tg_types::JobId = job.id.parse().map_err(ApiError::internal)?;
    audit
        .record_action(
            tg_trust::audit::kind::AGENT_REINSTATED,
            Some(job_id),
            json!({"change": change, "by": token.label}),
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the agent was not reinstated: it could not be audited ({e})"),
            )
        })?;
    store
        .save_reputations(job_id, std::slice::from_ref(&r))
        .map_err(ApiError::internal)?;
    tracing::info!(job = %job.id, %agent, token = %token.id, "agent reinstated through the API");
    Ok(Json(json!({
        "job": job.id,
        "agent": agent,
        "reputation": reputation_json(&r, token.role),
    })))
}
