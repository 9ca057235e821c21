//! Jobs, their rounds and their privacy ledger.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use serde_json::{Value, json};
use tg_store::{ApiRole, StoreError};

use super::auth::authorize;
use super::{ApiError, ApiState, with_store};

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/api/v1/jobs", get(list))
        .route("/api/v1/jobs/{id}", get(show))
        .route("/api/v1/jobs/{id}/rounds", get(rounds))
        .route("/api/v1/jobs/{id}/privacy", get(privacy))
}

fn not_found(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(what) => {
            ApiError::new(StatusCode::NOT_FOUND, format!("no job matches `{what}`"))
        }
        StoreError::Ambiguous { prefix, count } => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("`{prefix}` matches {count} jobs; give more of the id"),
        ),
        other => ApiError::internal(other),
    }
}

/// The job named by `id` (or a unique prefix), and `query` on its full id.
fn job_and<T>(
    state: &ApiState,
    id: &str,
    query: impl FnOnce(&tg_store::Store, &str) -> tg_store::Result<T>,
) -> Result<(tg_store::JobRow, T), ApiError> {
    with_store(state, |s| {
        let job = s.find_job(id).map_err(not_found)?;
        let found = query(s, &job.id).map_err(ApiError::internal)?;
        Ok((job, found))
    })
}

async fn list(State(state): State<ApiState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, "GET /api/v1/jobs", ApiRole::Viewer)?;
    let jobs = with_store(&state, |s| s.list_jobs().map_err(ApiError::internal))?;
    Ok(Json(json!({"jobs": jobs})))
}

async fn show(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, "GET /api/v1/jobs/{id}", ApiRole::Viewer)?;
    let job = with_store(&state, |s| s.find_job(&id).map_err(not_found))?;
    Ok(Json(json!(job)))
}

async fn rounds(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(
        &state,
        &headers,
        "GET /api/v1/jobs/{id}/rounds",
        ApiRole::Viewer,
    )?;
    let (job, rounds) = job_and(&state, &id, |s, job| s.rounds(job))?;
    Ok(Json(json!({"job": job.id, "rounds": rounds})))
}

/// The ledger and what is left of the budget.
async fn privacy(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(
        &state,
        &headers,
        "GET /api/v1/jobs/{id}/privacy",
        ApiRole::Viewer,
    )?;
    let (job, ledger) = job_and(&state, &id, |s, job| s.ledger(job))?;
    let target = job
        .spec
        .pointer("/privacy/target_epsilon")
        .and_then(Value::as_f64);
    let spent = ledger.last().map(|e| e.epsilon_after);
    Ok(Json(json!({
        "job": job.id,
        "target_epsilon": target,
        "epsilon_spent": spent,
        "epsilon_remaining": target.zip(spent).map(|(t, s)| (t - s).max(0.0)),
        "fraction_used": target.zip(spent).map(|(t, s)| if t > 0.0 { s / t } else { 1.0 }),
        "ledger": ledger,
    })))
}
