//! `tensorguard wallet` and `tensorguard peers`.

use std::path::Path;
use std::time::Duration;

use tg_compute::{NodeConfig, WalletExport, start};
use tg_diag::{Code, UserError, invalid};

use super::{bootstrap, compute_dir, from_compute, status_of};
use crate::cli::MeshArgs;
use crate::cli::WalletArgs;
use crate::errors::runtime;
use crate::output::Output;

/// `tensorguard wallet`.
pub fn wallet(a: &WalletArgs, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    if let Some(path) = &a.verify {
        let text = std::fs::read(path).map_err(|e| {
            invalid(
                format!("cannot read {}", path.display()),
                e.to_string(),
                "give an exported wallet file",
            )
        })?;
        let export: WalletExport = serde_json::from_slice(&text).map_err(|e| {
            UserError::new(
                Code::TaskMalformed,
                "not a wallet export",
                e.to_string(),
                "export one with `tensorguard wallet --export FILE`",
            )
        })?;
        let total = export.verify().map_err(from_compute)?;
        let by = export.by_submitter();
        if out.json {
            out.json_value(&serde_json::json!({"verified": true, "node": export.node, "points": total, "receipts": export.receipts.len(), "points_by_submitter": by}));
        } else {
            out.line(&format!(
                "verified: {} receipts pay node {} a total of {total} points",
                export.receipts.len(),
                export.node
            ));
            for (s, p) in &by {
                out.line(&format!("  {p:>8} points signed by submitter {s}"));
            }
            out.line(
                "a receipt proves only that its submitter signed it: weigh the submitters you know",
            );
        }
        return Ok(());
    }
    let node = crate::fleet::identity(data_dir, a.key_file.as_deref())?
        .signing_key()
        .verifying_key()
        .to_bytes();
    let w = tg_compute::Wallet::open(&compute_dir(data_dir).join("wallet"), node)
        .map_err(from_compute)?;
    let export = w.export();
    let peer = tg_net::peer_id_of(&node).map_err(|e| {
        UserError::new(
            Code::KeyInvalid,
            "the node key is not an Ed25519 key",
            e.to_string(),
            "check the key file",
        )
    })?;
    if let Some(path) = &a.export {
        std::fs::write(path, serde_json::to_vec_pretty(&export).unwrap_or_default()).map_err(
            |e| {
                UserError::new(
                    Code::DataDirUnwritable,
                    format!("cannot write {}", path.display()),
                    e.to_string(),
                    "choose a writable path",
                )
            },
        )?;
    }
    if out.json {
        out.json_value(&serde_json::json!({"node": export.node, "peer_id": peer.to_string(), "points": export.points, "receipts": export.receipts.len(), "export": a.export}));
    } else {
        out.line(&format!("node {} ({})", export.node, peer));
        out.line(&format!(
            "points {} from {} receipts",
            export.points,
            export.receipts.len()
        ));
        if let Some(p) = &a.export {
            out.line(&format!(
                "exported to {} — anyone can check it with `tensorguard wallet --verify {}`",
                p.display(),
                p.display()
            ));
        }
    }
    Ok(())
}

/// `tensorguard peers`.
pub fn peers(mesh: &MeshArgs, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    // The running node's table, when there is one and no other network was named.
    let table = if mesh.bootstrap.is_empty() && !mesh.mdns {
        status_of(data_dir).map(|s| s["peer_table"].clone())
    } else {
        None
    };
    let rows: serde_json::Value = match table {
        Some(t) => t,
        None => {
            let boot = bootstrap(mesh, data_dir)?;
            // A look at the network needs no identity of this data directory:
            // a throwaway one, so it never contends with a running submit.
            let mut secret = [0u8; 32];
            crate::errors::os_random(&mut secret)?;
            let scratch = tempfile::tempdir().map_err(|e| {
                UserError::new(
                    Code::Store,
                    "cannot make a scratch directory",
                    e.to_string(),
                    "check TMPDIR is writable",
                )
            })?;
            let dir = compute_dir(data_dir);
            let mut cfg = NodeConfig::new(dir.join("models"), scratch.path().join("wallet"));
            cfg.bootstrap = boot;
            cfg.mdns = mesh.mdns;
            cfg.lan = mesh.lan;
            cfg.serve = false;
            let rt = runtime()?;
            rt.block_on(async {
                let (h, _t) = start(secret, cfg).await.map_err(from_compute)?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, UserError>(
                    serde_json::to_value(h.peers().await.map_err(from_compute)?)
                        .unwrap_or_default(),
                )
            })?
        }
    };
    if out.json {
        out.json_value(&rows);
        return Ok(());
    }
    let empty = Vec::new();
    let list = rows.as_array().unwrap_or(&empty);
    out.line(&format!(
        "{:<54} {:>8} {:<28} {:>10}  address",
        "peer", "rtt ms", "agent", "reputation"
    ));
    for r in list {
        out.line(&format!(
            "{:<54} {:>8} {:<28} {:>10}  {}",
            r["peer"].as_str().unwrap_or(""),
            r["rtt_ms"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.1}")),
            r["agent"].as_str().unwrap_or("-"),
            if r["excluded"].as_bool() == Some(true) {
                "excluded".to_string()
            } else {
                format!("{:.2}", r["reputation"].as_f64().unwrap_or(1.0))
            },
            r["addr"].as_str().unwrap_or(""),
        ));
    }
    out.line(&format!("{} peers", list.len()));
    Ok(())
}
