//! Running a real fleet: `coordinator start`, `agent start`, `enroll
//! create`, and the agent daemon (`up`, `down`, `status`, `logs`).
//!
//! Design decision: this module is glue. The protocol lives in tg-net,
//! tg-proto, tg-coordinator and tg-agent; here we read files and flags, load
//! the node's identity, start the network and print what happened.

pub mod agent;
mod audit_sink;
pub mod bench;
pub mod coordinator;
pub mod daemon;
pub mod jobfile;

use std::path::Path;
use std::sync::Arc;

use tg_trust::IdentityKey;

use crate::errors::{CliError, Code};
use crate::output::Output;

/// The node's identity (see [`crate::keys::node_identity`]).
pub fn identity(data_dir: &Path, key_file: Option<&Path>) -> Result<IdentityKey, CliError> {
    crate::keys::node_identity(data_dir, key_file)
}

/// Starts a network node for `key`; returns its client and events.
pub fn start_node(
    key: &IdentityKey,
    config: tg_net::Config,
) -> Result<(tg_net::Client, tokio::sync::mpsc::Receiver<tg_net::Event>), CliError> {
    let (client, events, event_loop) =
        tg_net::new(key.signing_key().to_bytes(), config).map_err(|e| {
            CliError::new(
                Code::Network,
                "cannot start the network",
                e.to_string(),
                "check the listen addresses (is the port in use?)",
            )
        })?;
    tokio::spawn(event_loop.run());
    Ok((client, events))
}

/// Serves `GET /metrics` on `addr` in the background.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: Arc<tg_metrics::Metrics>,
    api: Option<axum::Router>,
    out: &Output,
) -> Result<(), CliError> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        CliError::new(
            Code::Network,
            format!("cannot serve metrics on {addr}"),
            e.to_string(),
            "choose a free address, e.g. --metrics 127.0.0.1:9101",
        )
    })?;
    let bound = listener.local_addr().map_or(addr, |a| a);
    out.note(&format!("metrics on http://{bound}/metrics"));
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    );
    let app = match api {
        Some(api) => {
            out.note(&format!(
                "REST API on http://{bound}/api/v1 (bearer tokens: `tensorguard api token create`)"
            ));
            app.merge(api)
        }
        None => app,
    };
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(())
}
