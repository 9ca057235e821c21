//! The coordinator's REST API (`/api/v1`), its OpenAPI document and the web
//! dashboard, for operators.
//!
//! Design decision: every handler begins with one explicit
//! [`auth::authorize`] call naming the least role it needs, so a route's
//! permission is visible where the route is written and a missing check is
//! a review finding, not a routing subtlety. Errors are JSON
//! (`{"error": {"status", "message"}}`) with the status that says who must
//! act: 400 bad input, 401 no or bad token, 403 role too low, 404 unknown
//! id, 409 conflicting state, 503 nothing to do it with. Reading is
//! mechanism here; what a job file means and how a key provider is reached
//! is policy, supplied by the binary through [`Operations`].

mod agents;
mod audit;
pub mod auth;
mod dashboard;
mod events;
mod jobs;
mod models;
pub mod openapi;
mod settings;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tg_store::Store;
use utoipa::ToSchema;

pub use settings::{JobDefaults, KeyProvider};

use crate::admission::AuditSink;
use crate::fleet_view::FleetView;

/// Why the binary refused an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperationError {
    /// The input is wrong (400); the message says what to change.
    #[error("{0}")]
    Invalid(String),
    /// No such job (404).
    #[error("{0}")]
    NotFound(String),
    /// The state forbids it now (409), e.g. stopping a finished job.
    #[error("{0}")]
    Conflict(String),
    /// This coordinator cannot do it (503), e.g. the job queue is full.
    #[error("{0}")]
    Unavailable(String),
}

/// A job accepted by [`Operations::submit_job`].
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SubmittedJob {
    /// The job's id.
    pub job: String,
    /// Jobs ahead of it in this coordinator's queue.
    pub queued_behind: usize,
}

/// What a key provider's connection test found.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ProviderCheck {
    /// `ok`, `reachable` (cloud: connected, credentials not checked),
    /// `unreachable` or `misconfigured`.
    pub status: String,
    /// What was tried and what happened.
    pub detail: String,
}

/// What the binary does for the API (policy the router does not own).
pub trait Operations: Send + Sync {
    /// Parses a job file (TOML text) with `defaults` for absent keys and
    /// queues the job.
    fn submit_job(
        &self,
        job_file: &str,
        defaults: &JobDefaults,
    ) -> Result<SubmittedJob, OperationError>;
    /// Asks a running or queued job to stop before its next round.
    fn stop_job(&self, job: &str) -> Result<(), OperationError>;
    /// Tries to reach a key provider with `config`, honestly.
    fn test_key_provider(&self, config: &KeyProvider) -> ProviderCheck;
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The coordinator's store (a connection of its own).
    pub store: Arc<Mutex<Store>>,
    /// Live agents (empty where no network job runs in this process).
    pub fleet: FleetView,
    /// Job submission, stop and provider tests (None: read-only API).
    pub ops: Option<Arc<dyn Operations>>,
    /// Where settings changes are recorded.
    pub audit: Option<Arc<dyn AuditSink>>,
    /// The audit log file, for query and export.
    pub audit_log: Option<PathBuf>,
    /// Where refused requests are counted.
    pub metrics: Option<Arc<tg_metrics::Metrics>>,
}

impl ApiState {
    /// A read-only API over `store`.
    pub fn new(store: Store) -> Self {
        Self {
            store: Arc::new(Mutex::new(store)),
            fleet: FleetView::default(),
            ops: None,
            audit: None,
            audit_log: None,
            metrics: None,
        }
    }
}

/// The `/api/v1` routes, `/api/v1/openapi.json` and the dashboard at `/`.
pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new()
        .merge(jobs::routes())
        .merge(agents::routes())
        .merge(models::routes())
        .merge(audit::routes())
        .merge(settings::routes())
        .merge(events::routes())
        .merge(openapi::routes())
        .merge(dashboard::routes())
        .with_state(state)
}

/// An API error: a status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What happened and what to do.
    pub message: String,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Status and message of an error.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// HTTP status code.
    pub status: u16,
    /// What happened and what to do.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("API internal error: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the coordinator's log",
        )
    }
}

impl From<OperationError> for ApiError {
    fn from(e: OperationError) -> Self {
        let status = match e {
            OperationError::Invalid(_) => StatusCode::BAD_REQUEST,
            OperationError::NotFound(_) => StatusCode::NOT_FOUND,
            OperationError::Conflict(_) => StatusCode::CONFLICT,
            OperationError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                status: self.status.as_u16(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Runs `f` on the store.
pub(crate) fn with_store<T>(
    state: &ApiState,
    f: impl FnOnce(&Store) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let store = state
        .store
        .lock()
        .map_err(|_| ApiError::internal("store lock poisoned"))?;
    f(&store)
}

/// The operations, or 503 when this process serves a read-only API.
pub(crate) fn ops(state: &ApiState) -> Result<&Arc<dyn Operations>, ApiError> {
    state.ops.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server is read-only (no coordinator runs jobs here); use the API of `tensorguard coordinator start`",
        )
    })
}
