//! Model versions and their safetensors bytes.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tg_store::ApiRole;

use super::auth::{Denied, authorize};
use super::jobs::job_and;
use super::{ApiError, ApiState, ErrorBody, with_store};

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/api/v1/jobs/{id}/models", get(list))
        .route("/api/v1/models/{sha256}", get(download))
}

/// Every model version a job committed, oldest first.
#[utoipa::path(get, operation_id = "list_models", path = "/api/v1/jobs/{id}/models", tag = "models", security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix")),
    responses((status = 200, description = "`{\"job\", \"models\": [{sha256, job, round, bytes, created_at_ms}]}`", body = Value),
        (status = 404, description = "No such job", body = ErrorBody), Denied))]
pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(
        &state,
        &headers,
        "GET /api/v1/jobs/{id}/models",
        ApiRole::Viewer,
    )?;
    let (job, models) = job_and(&state, &id, |s, job| s.models(job))?;
    Ok(Json(json!({"job": job.id, "models": models})))
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
