//! Running a real fleet: `coordinator start`, `agent start`, `enroll
//! create`, and the agent daemon (`up`, `down`, `status`, `logs`).
//!
//! Design decision: this module is glue. The protocol lives in tg-net,
//! tg-proto, tg-coordinator and tg-agent; here we read files and flags, load
//! the node's identity, start the network and print what happened.

pub mod agent;
pub mod coordinator;
pub mod daemon;

use std::path::Path;
use std::sync::Arc;

use tg_trust::IdentityKey;

use crate::errors::{Code, UserError};
use crate::output::Output;

/// The node's identity (see [`crate::keys::node_identity`]).
pub fn identity(data_dir: &Path, key_file: Option<&Path>) -> Result<IdentityKey, UserError> {
    crate::keys::node_identity(data_dir, key_file)
}

/// Starts a network node for `key`; returns its client and events.
pub fn start_node(
    key: &IdentityKey,
    config: tg_net::Config,
) -> Result<(tg_net::Client, tokio::sync::mpsc::Receiver<tg_net::Event>), UserError> {
    tg_coordinator::service::job::start_node(key, config).map_err(|e| {
        let why = match e {
            tg_coordinator::service::ServiceError::Network(why) => why,
            other => other.to_string(),
        };
        UserError::new(
            Code::Network,
            "cannot start the network",
            why,
            "check the listen addresses (is the port in use?)",
        )
    })
}

/// Serves `GET /metrics` (and the API and dashboard, when given) on `addr`
/// in the background: the flags' meaning and refusals here, the serving in
/// `tg_coordinator::http`.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: Arc<tg_metrics::Metrics>,
    api: Option<tg_coordinator::http::Router>,
    tls: &crate::cli::TlsArgs,
    out: &Output,
) -> Result<(), UserError> {
    let acceptor = tls_acceptor(tls)?;
    if api.is_some() && acceptor.is_none() && !addr.ip().is_loopback() && !tls.insecure_http {
        return Err(UserError::new(
            Code::InvalidValue,
            format!("the API would be served over plain HTTP on {addr}"),
            "other hosts can reach that address, and bearer tokens would cross the network in the clear",
            "add --tls-cert and --tls-key, bind to 127.0.0.1, or (knowingly) pass --insecure-http",
        ));
    }
    let metrics_token = match &tls.metrics_token_file {
        None => None,
        Some(path) => Some(read_token(path)?),
    };
    let listener = tg_coordinator::http::bind(addr).await.map_err(|e| {
        UserError::new(
            Code::Network,
            format!("cannot serve metrics on {addr}"),
            e.to_string(),
            "choose a free address, e.g. --metrics 127.0.0.1:9101",
        )
    })?;
    let bound = listener.local_addr().map_or(addr, |a| a);
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    out.note(&format!("metrics on {scheme}://{bound}/metrics"));
    let app = tg_coordinator::http::metrics_router(metrics, metrics_token);
    let app = match api {
        Some(api) => {
            out.note(&format!(
                "REST API on {scheme}://{bound}/api/v1 and dashboard on {scheme}://{bound}/ (bearer tokens: `tensorguard api token create`)"
            ));
            if acceptor.is_none() && !bound.ip().is_loopback() {
                out.note(&out.red(&format!("the API on {bound} is reachable from other hosts without TLS: bearer tokens cross the network in the clear; add --tls-cert and --tls-key")));
            }
            app.merge(api)
        }
        None => app,
    };
    tg_coordinator::http::spawn(listener, app, acceptor);
    Ok(())
}

/// The TLS acceptor `--tls-cert/--tls-key` describe, or None without them.
/// Plain HTTP stays the default only because the default bind address is
/// 127.0.0.1.
fn tls_acceptor(
    args: &crate::cli::TlsArgs,
) -> Result<Option<tg_coordinator::http::TlsAcceptor>, UserError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    tg_coordinator::http::tls_acceptor(cert, key)
        .map(Some)
        .map_err(|e| {
            UserError::new(
                Code::ConfigInvalid,
                "cannot serve TLS with the given files",
                e.to_string(),
                "give a PEM certificate chain (--tls-cert) and its PEM private key (--tls-key)",
            )
        })
}

/// The metrics bearer token: the file's first line, at least 16 characters.
fn read_token(path: &Path) -> Result<String, UserError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::errors::invalid(
            format!("--metrics-token-file {}", path.display()),
            e.to_string(),
            "point it at a readable file holding the token",
        )
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(crate::errors::invalid(
            format!("--metrics-token-file {}", path.display()),
            "the token is shorter than 16 characters",
            "write a long random token, e.g. `head -c 24 /dev/urandom | base64 > FILE`",
        ));
    }
    Ok(token)
}

/// Free and total bytes of the filesystem holding `dir` (for metrics).
pub fn disk_space(dir: &Path) -> Option<tg_metrics::DiskSnapshot> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(tg_metrics::DiskSnapshot {
        available: st.f_bavail.saturating_mul(st.f_frsize),
        size: st.f_blocks.saturating_mul(st.f_frsize),
    })
}
