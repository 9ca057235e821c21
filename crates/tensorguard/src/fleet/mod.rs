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
/// in the background (`tg_coordinator::http::serve`, which holds the rules),
/// says where, and returns the bound address.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    metrics: Arc<dyn tg_metrics::Exposition>,
    api: Option<tg_coordinator::http::Router>,
    tls: &crate::cli::TlsArgs,
    out: &Output,
) -> Result<std::net::SocketAddr, UserError> {
    use tg_coordinator::http::{self, HttpError};
    let with_api = api.is_some();
    let how = http::Serve {
        addr,
        tls: tls.tls_cert.as_deref().zip(tls.tls_key.as_deref()),
        insecure_http: tls.insecure_http,
        metrics_token_file: tls.metrics_token_file.as_deref(),
    };
    let served = http::serve(&how, metrics, api).await.map_err(|e| match e {
        HttpError::PlainHttpExposed(addr) => UserError::new(
            Code::InvalidValue,
            format!("the API would be served over plain HTTP on {addr}"),
            "other hosts can reach that address, and bearer tokens would cross the network in the clear",
            "add --tls-cert and --tls-key, bind to 127.0.0.1, or (knowingly) pass --insecure-http",
        ),
        HttpError::Tls { path, why } => UserError::new(
            Code::ConfigInvalid,
            "cannot serve TLS with the given files",
            format!("{}: {why}", path.display()),
            "give a PEM certificate chain (--tls-cert) and its PEM private key (--tls-key)",
        ),
        HttpError::Token { path, why } => crate::errors::invalid(
            format!("--metrics-token-file {}", path.display()),
            why,
            "write a long random token to a readable file, e.g. `head -c 24 /dev/urandom | base64 > FILE`",
        ),
        other => UserError::new(
            Code::Network,
            format!("cannot serve metrics on {addr}"),
            other.to_string(),
            "choose a free address, e.g. --metrics 127.0.0.1:9101",
        ),
    })?;
    let scheme = if served.https { "https" } else { "http" };
    let bound = served.addr;
    out.note(&format!("metrics on {scheme}://{bound}/metrics"));
    if with_api {
        out.note(&format!(
            "REST API on {scheme}://{bound}/api/v1 and dashboard on {scheme}://{bound}/ (bearer tokens: `tensorguard api token create`)"
        ));
    }
    if served.exposed_plain {
        out.note(&out.red(&format!("the API on {bound} is reachable from other hosts without TLS: bearer tokens cross the network in the clear; add --tls-cert and --tls-key")));
    }
    Ok(bound)
}

/// Free and total bytes of the filesystem holding `dir` (for metrics).
pub fn disk_space(dir: &Path) -> Option<tg_metrics::DiskSnapshot> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(tg_metrics::DiskSnapshot {
        available: st.f_bavail.saturating_mul(st.f_frsize),
        size: st.f_blocks.saturating_mul(st.f_frsize),
    })
}
