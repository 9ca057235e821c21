//! Model versions and their safetensors bytes.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tg_store::ApiRole;

use super::auth::{Denied, authorize};
use super::jobs::job_and;
use super::{ApiError, ApiState, ErrorBody, with_store};

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/api/v1/jobs/{id}/models", get(list))
        .route("/api/v1/jobs/{id}/models/rollback", post(rollback))
        .route("/api/v1/models/{sha256}", get(download))
}

/// The job's model registry: every version it committed (oldest first) with
/// its parent, metrics and ε, the head its next round starts from, and the
/// operators' rollbacks.
#[utoipa::path(get, operation_id = "list_models", path = "/api/v1/jobs/{id}/models", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    responses((status = 200, description = "`{\"job\", \"head\": {sha256, rollback}, \"versions\": [{sha256, round, parent_sha256, bytes, created_at_ms, accuracy, loss, epsilon, federated, gate, head}], \"rollbacks\": [...], \"models\": [{sha256, job, round, bytes, created_at_ms}]}`", body = Value),
        (status = 404, description = "No such job", body = ErrorBody), Denied))]
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(
        &state,
        &headers,
        "GET /api/v1/jobs/{id}/models",
        ApiRole::Viewer,
    )?;
    let (job, (models, mut versions, head, rollbacks)) = job_and(&state, &id, |s, job| {
        Ok((
            s.models(job)?,
            s.model_versions(job)?,
            s.model_head(job)?,
            s.rollbacks(job)?,
        ))
    })?;
    if token.role < ApiRole::Operator {
        // Per-task success counts are for operators (see jobs.rs).
        for v in &mut versions {
            super::jobs::hide_task_counts(&mut v.gate, &mut v.federated);
        }
    }
    Ok(Json(json!({
        "job": job.id,
        "head": head,
        "versions": versions,
        "rollbacks": rollbacks,
        "models": models,
    })))
}

/// A rollback request.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The version's SHA-256, or its first 6+ hex digits.
    pub version: String,
    /// Why (kept in the audit log), 1 to 1000 characters.
    pub reason: String,
}

/// Moves the job's head back to one of its versions: its next round (and the
/// fleet) starts from it. Audited as `model.rolled_back` before it takes
/// effect; a rollback that cannot be audited does not happen.
#[utoipa::path(post, operation_id = "rollback_model", path = "/api/v1/jobs/{id}/models/rollback", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    request_body = RollbackRequest,
    responses((status = 200, description = "`{\"job\", \"rollback\": {seq, sha256, from_sha256, after_round, reason, actor, at_ms}, \"round\"}`", body = Value),
        (status = 400, description = "No reason, or a malformed version", body = ErrorBody),
        (status = 404, description = "No such job or version", body = ErrorBody),
        (status = 409, description = "The version already is the head", body = ErrorBody),
        (status = 503, description = "Read-only server (nothing to audit with)", body = ErrorBody), Denied))]
pub(super) async fn rollback(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let token = authorize(
        &state,
        &headers,
        "POST /api/v1/jobs/{id}/models/rollback",
        ApiRole::Operator,
    )?;
    let request: RollbackRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body must be {{\"version\": \"<sha256 or its first 6+ hex digits>\", \"reason\": \"…\"}}: {e}"
        ))
    })?;
    let Some(audit) = state.audit.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server is read-only (it has no audit log to record a rollback in); use the API of `tensorguard coordinator start`, or `tensorguard models rollback`",
        ));
    };
    tg_store::registry::check_reason(&request.reason)
        .map_err(|why| ApiError::bad_request(format!("`reason`: {why}")))?;
    let reason = request.reason.trim();
    let actor = format!("API token {} ({})", token.id, token.label);
    let mut store = state
        .store
        .lock()
        .map_err(|_| ApiError::internal("store lock poisoned"))?;
    let job = store.find_job(&id).map_err(super::jobs::not_found)?;
    if let Some(why) = crate::service::audit::rollback_refused_for(&job.spec) {
        return Err(ApiError::new(StatusCode::CONFLICT, why));
    }
    let version = store
        .find_version(&job.id, &request.version)
        .map_err(registry_error)?;
    let job_id: tg_types::JobId = job
        .id
        .parse()
        .map_err(|_| ApiError::internal("a stored job id is not a job id"))?;
    let done = store
        .rollback_model(&job.id, &version.sha256, reason, &actor, |r| {
            let event = crate::service::audit::model_rolled_back(r, version.round);
            audit.record_action(event.kind(), Some(job_id), event.body())
        })
        .map_err(registry_error)?;
    tracing::warn!(job = %job.id, to = %done.sha256, token = %token.id, "model rolled back through the API");
    Ok(Json(
        json!({"job": job.id, "rollback": done, "round": version.round}),
    ))
}

fn registry_error(e: tg_store::StoreError) -> ApiError {
    match e {
        tg_store::StoreError::NoVersion { .. } | tg_store::StoreError::Ambiguous { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, e.to_string())
        }
        tg_store::StoreError::Unaudited(why) => {
            // The detail (paths, signer errors) stays in the server's log.
            tracing::error!("rollback not audited: {why}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not rolled back: the audit log could not record it (see the coordinator's log)",
            )
        }
        tg_store::StoreError::Refused(why) => ApiError::new(StatusCode::CONFLICT, why),
        other => ApiError::internal(other),
    }
}

/// A committed model as safetensors (load it with `safetensors.torch.load_file`).
#[utoipa::path(get, operation_id = "download_model", path = "/api/v1/models/{sha256}", tag = "models", security(("bearer" = [])),
    params(("sha256" = String, Path, pattern = "^[0-9a-fA-F]{64}$", description = "The model's SHA-256 (64 hex digits)")),
    responses((status = 200, description = "The safetensors file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Not a SHA-256", body = ErrorBody),
        (status = 404, description = "No committed model has this digest", body = ErrorBody), Denied))]
pub(super) async fn download(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(sha): Path<String>,
) -> Result<Response, ApiError> {
    authorize(
        &state,
        &headers,
        "GET /api/v1/models/{sha256}",
        ApiRole::Viewer,
    )?;
    let sha = sha.to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "`{sha}` is not a SHA-256: give the 64 hex digits from /api/v1/jobs/{{id}}/models"
        )));
    }
    let bytes = with_store(&state, |s| {
        if s.model(&sha).map_err(ApiError::internal)?.is_none() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no committed model has SHA-256 {sha}"),
            ));
        }
        s.blobs().get(&sha).map_err(ApiError::internal)
    })?;
    let name = format!("attachment; filename=\"model-{}.safetensors\"", &sha[..12]);
    let mut response = Body::from(bytes).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
