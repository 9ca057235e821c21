//! The web dashboard: one page and its script and style, embedded in the
//! binary (no build step; the sources in `assets/` are what is served).
//!
//! Design decision: the page holds no data and needs no token to load;
//! everything it shows comes from the authenticated API, fetched with the
//! token the operator typed (kept in the tab's session storage). When a
//! request fails the page shows the error, never sample data.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::ApiState;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const CHARTS: &str = include_str!("assets/charts.js");
const REGISTRY: &str = include_str!("assets/registry.js");
const STYLE: &str = include_str!("assets/app.css");

/// Restrictive by default: our own origin only, no inline script.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

pub(super) fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(script))
        .route("/assets/charts.js", get(charts))
        .route("/assets/registry.js", get(registry))
        .route("/assets/app.css", get(style))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        INDEX,
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

async fn charts() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CHARTS,
    )
}

async fn registry() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        REGISTRY,
    )
}

async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}
