//! Glue for the compute network's commands (the node lives in tg-compute).

use std::path::{Path, PathBuf};

use tg_compute::ComputeError;
use tg_diag::{Code, UserError, invalid};
use tg_tasks::TaskError;

use crate::cli::MeshArgs;

mod demo;
mod metrics;
mod node;
mod task;
mod wallet;

pub use demo::demo;
pub use node::{print_status, start_node, status_of};
pub use task::task;
pub use wallet::{peers, wallet};

pub(super) fn compute_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("compute")
}

pub(super) fn node_file(data_dir: &Path) -> PathBuf {
    compute_dir(data_dir).join("node.json")
}

/// A compute error as a person reads it.
pub fn from_compute(e: ComputeError) -> UserError {
    let (code, fix) = match e.code() {
        "E120" => (
            Code::ArtifactRefused,
            "run scripts/compute/fetch_models.sh DIR (it checks every hash) or let the node fetch the model from a peer",
        ),
        "E121" => (
            Code::TaskMalformed,
            "fix the task's input (see docs/ERRORS.md#E121)",
        ),
        "E122" => (
            Code::TaskOversize,
            "split the input, or use --kind chunk for a long text",
        ),
        "E123" => (Code::TaskKindUnknown, "use --kind embed, classify or chunk"),
        "E124" => (
            Code::SignatureRefused,
            "nothing to do: the result or receipt is refused and counted",
        ),
        "E126" => (
            Code::TaskFailed,
            "resubmit, or lower --redundancy if too few honest workers are up",
        ),
        "E127" => (
            Code::TaskStoreInUse,
            "wait for the other `tensorguard task submit` on this data directory, or use another --data-dir",
        ),
        "E080" => (Code::Network, "check --listen and --bootstrap addresses"),
        "E072" => (Code::NotRunning, "start it again"),
        _ => (Code::Store, "check the data directory is writable"),
    };
    UserError::new(
        code,
        "the compute network refused or failed",
        e.to_string(),
        fix,
    )
}

pub(super) fn from_task(e: TaskError) -> UserError {
    from_compute(ComputeError::Task(e))
}

pub(super) fn parse_addrs(v: &[String]) -> Result<Vec<tg_net::Multiaddr>, UserError> {
    v.iter()
        .map(|a| {
            a.parse().map_err(|e| {
                invalid(
                    format!("address {a:?}"),
                    format!("{e}"),
                    "write a multiaddr such as /ip4/127.0.0.1/tcp/4001/p2p/12D3…",
                )
            })
        })
        .collect()
}

/// The bootstrap addresses: the flags, else the running node of this data directory.
pub(super) fn bootstrap(
    mesh: &MeshArgs,
    data_dir: &Path,
) -> Result<Vec<tg_net::Multiaddr>, UserError> {
    if !mesh.bootstrap.is_empty() || mesh.mdns {
        return parse_addrs(&mesh.bootstrap);
    }
    let Some(s) = status_of(data_dir) else {
        return Err(UserError::new(
            Code::Network,
            "no compute peers known",
            "no --bootstrap address was given, no --mdns, and no compute node runs in this data directory",
            "start one with `tensorguard compute start`, or pass --bootstrap /ip4/…/tcp/…/p2p/ID",
        ));
    };
    let peer = s["peer_id"].as_str().unwrap_or_default().to_string();
    let addrs: Vec<String> = s["listen"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .filter(|a| a.contains("127.0.0.1") || a.contains("/ip4/"))
                .map(|a| format!("{a}/p2p/{peer}"))
                .collect()
        })
        .unwrap_or_default();
    parse_addrs(&addrs)
}

pub(super) fn secret(data_dir: &Path, key_file: Option<&Path>) -> Result<[u8; 32], UserError> {
    let id = crate::fleet::identity(data_dir, key_file)?;
    Ok(id.signing_key().to_bytes())
}

pub(super) fn short(peer: &str) -> String {
    let n = peer.len();
    if n > 10 {
        format!("…{}", &peer[n - 8..])
    } else {
        peer.to_string()
    }
}

/// The submitter's key: a separate identity, so a machine that submits and
/// serves is two peers (a node never assigns a task to itself).
pub(super) fn submitter_secret(
    data_dir: &Path,
    key_file: Option<&Path>,
) -> Result<[u8; 32], UserError> {
    let s = secret(data_dir, key_file)?;
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tensorguard/compute/submitter/v1\0");
    h.update(s);
    Ok(h.finalize().into())
}
