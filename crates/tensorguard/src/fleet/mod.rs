//! Running a real fleet: `coordinator start`, `agent start`, `enroll
//! create`, and the agent daemon (`up`, `down`, `status`, `logs`).
//!
//! Design decision: this module is glue. The protocol lives in tg-net,
//! tg-proto, tg-coordinator and tg-agent; here we read files and flags, load
//! the node's identity, start the network and print what happened.

pub mod agent;
pub mod bench;
pub mod coordinator;
pub mod daemon;
pub mod jobfile;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tg_trust::IdentityKey;

use crate::errors::{from_trust, CliError, Code};
use crate::output::Output;

/// The node's identity: `key_file`, or `identity.key` in the data dir,
/// created (mode 0600) on first use.
pub fn identity(data_dir: &Path, key_file: Option<&Path>) -> Result<IdentityKey, CliError> {
    let path: PathBuf = key_file.map_or_else(|| data_dir.join("identity.key"), Path::to_owned);
    if path.exists() {
        return IdentityKey::load(&path).map_err(from_trust);
    }
    if key_file.is_some() {
        return Err(CliError::new(
            Code::KeyInvalid,
            format!("identity key {} does not exist", path.display()),
            "a key named on the command line is never created implicitly",
            "create one with `tensorguard init`, or leave out --key-file to use the data dir's",
        ));
    }
    std::fs::create_dir_all(data_dir).map_err(|e| {
        CliError::new(
            Code::DataDirUnwritable,
            format!("cannot create {}", data_dir.display()),
            e.to_string(),
            "choose a writable --data-dir",
        )
    })?;
    let key = IdentityKey::generate().map_err(from_trust)?;
    key.save(&path, false).map_err(from_trust)?;
    Ok(key)
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
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(())
}
