//! The coordinator's REST API (`/api/v1`), for operators and dashboards.
//!
//! Design decision: every handler begins with one explicit
//! [`auth::authorize`] call naming the least role it needs, so a route's
//! permission is visible where the route is written and a missing check is
//! a review finding, not a routing subtlety. Errors are JSON
//! (`{"error": {"status", "message"}}`) with the status that says who must
//! act: 401 no or bad token, 403 role too low, 404 unknown id. The store is
//! shared behind a mutex; every query is short.

pub mod auth;
mod jobs;

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tg_store::Store;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The coordinator's store (a connection of its own).
    pub store: Arc<Mutex<Store>>,
}

/// The `/api/v1` routes.
pub fn router(state: ApiState) -> axum::Router {
    jobs::routes().with_state(state)
}

/// An API error: a status and a message for the caller.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
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

    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("API internal error: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the coordinator's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            Json(json!({"error": {"status": self.status.as_u16(), "message": self.message}}));
        (self.status, body).into_response()
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
