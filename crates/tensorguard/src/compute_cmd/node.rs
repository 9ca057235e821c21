//! `tensorguard compute start` and the compute line of `tensorguard status`.

use std::path::Path;
use std::time::{Duration, Instant};

use tg_compute::{NodeConfig, start};
use tg_diag::{UserError, invalid};
use tg_tasks::Models;

use super::{compute_dir, from_compute, metrics, node_file, parse_addrs, secret};
use crate::cli::ComputeStartArgs;
use crate::errors::runtime_one_thread;
use crate::output::Output;

/// The running node's last status (written every 2 s), if it is fresh.
pub fn status_of(data_dir: &Path) -> Option<serde_json::Value> {
    let p = node_file(data_dir);
    let meta = std::fs::metadata(&p).ok()?;
    if meta.modified().ok()?.elapsed().ok()? > Duration::from_secs(10) {
        return None;
    }
    serde_json::from_slice(&std::fs::read(&p).ok()?).ok()
}

/// Prints the compute node's status (`tensorguard status`).
pub fn print_status(s: &serde_json::Value, out: &Output) {
    if out.json {
        out.line(&serde_json::json!({"compute": s}).to_string());
        return;
    }
    let cap = &s["capability"];
    let sim = if s["simulation"].as_bool() == Some(true) {
        " · SIMULATION (lying worker)"
    } else {
        ""
    };
    out.line(&format!(
        "compute {} · reachability {} · {} peers · {} · cpu {}% of {}% cap · queue {} · rss {} MB · model {} · {} points{sim}",
        s["peer_id"].as_str().unwrap_or("?"),
        s["reachability"].as_str().unwrap_or("unknown"),
        s["peers"],
        if cap["over_caps"].as_bool() == Some(true) {
            format!("refusing ({})", cap["reason"].as_str().unwrap_or(""))
        } else {
            "accepting".into()
        },
        cap["cpu_used_pct"],
        cap["cpu_cap_pct"],
        cap["queue"],
        s["rss_bytes"].as_u64().unwrap_or(0) >> 20,
        if s["model_loaded"].as_bool() == Some(true) { "loaded" } else { "not loaded" },
        s["points"],
    ));
}

/// `tensorguard compute start`.
pub fn start_node(a: &ComputeStartArgs, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let boot = Instant::now();
    let dir = compute_dir(data_dir);
    let models = a.models.clone().unwrap_or_else(|| dir.join("models"));
    let mut cfg = NodeConfig::new(models.clone(), dir.join("wallet"));
    cfg.listen = parse_addrs(&a.listen)?;
    cfg.bootstrap = parse_addrs(&a.mesh.bootstrap)?;
    cfg.mdns = a.mesh.mdns;
    cfg.lan = a.mesh.lan;
    cfg.relays = parse_addrs(&a.relay)?;
    for (r, text) in cfg.relays.iter().zip(&a.relay) {
        use tg_net::multiaddr::Protocol;
        let ends_in_id = matches!(r.iter().last(), Some(Protocol::P2p(_)));
        if !ends_in_id || r.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            return Err(invalid(
                format!("--relay {text}"),
                "a relay's address must end in its peer id and not be a circuit itself",
                "write it as /ip4/HOST/tcp/PORT/p2p/RELAY_ID",
            ));
        }
    }
    cfg.serve = !a.no_serve;
    if !(1..=6400).contains(&a.cpu_cap) {
        return Err(invalid(
            format!("--cpu-cap {}", a.cpu_cap),
            "must be 1–6400 (percent of one core)",
            "use e.g. --cpu-cap 50",
        ));
    }
    cfg.worker.cpu_cap_pct = a.cpu_cap;
    cfg.worker.mem_cap_bytes = a.mem_cap_mb.saturating_mul(1 << 20);
    cfg.cache_max_bytes = a.cache_max_mb.saturating_mul(1 << 20);
    cfg.worker.max_queue = a.max_queue.max(1);
    cfg.worker.threads = a.threads.clamp(1, 64);
    cfg.worker.task_timeout = Duration::from_secs(a.task_timeout.max(1));
    cfg.worker.simulate_lying = a.simulate_lying;
    if let Some(addr) = a.metrics
        && !addr.ip().is_loopback()
        && a.metrics_token_file.is_none()
    {
        return Err(invalid(
            format!("--metrics {addr}"),
            "other hosts could read this node's points, load and memory without a token",
            "bind to 127.0.0.1, or add --metrics-token-file FILE (the token then crosses the network in the clear: keep it to a trusted network)",
        ));
    }
    let secret = secret(data_dir, a.mesh.key_file.as_deref())?;
    // One thread runs the node's event loops: an idle volunteer node mostly
    // waits, and each runtime thread that allocates gets a malloc arena of
    // its own (about 3 MiB each at idle, measured). Inference runs on the
    // worker's own threads.
    let rt = runtime_one_thread()?;
    rt.block_on(async {
        let (h, _task) = start(secret, cfg).await.map_err(from_compute)?;
        if a.simulate_lying {
            out.note("SIMULATION: this node returns perturbed embeddings (a lying worker). Never use it on a real network.");
        }
        let last: metrics::LastStatus = Default::default();
        let metrics_at = match a.metrics {
            Some(addr) => {
                let m = tg_metrics::ComputeMetrics::new();
                let (stats, seen) = (h.stats.clone(), last.clone());
                m.attach(move || metrics::snapshot(&stats, &seen));
                let tls = crate::cli::TlsArgs {
                    metrics_token_file: a.metrics_token_file.clone(),
                    ..Default::default()
                };
                let at = crate::fleet::serve_metrics(addr, m, None, &tls, out).await?;
                Some(format!("http://{at}/metrics"))
            }
            None => None,
        };
        let file = node_file(data_dir);
        let mut ready = false;
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = tokio::signal::ctrl_c() => {
                    out.note("compute node stopping");
                    let _ = std::fs::remove_file(&file);
                    return Ok(());
                }
            }
            let st = h.status().await.map_err(from_compute)?;
            if !ready && !st.listen.is_empty() {
                ready = true;
                let line = serde_json::json!({
                    "event": "ready",
                    "peer_id": st.peer_id,
                    "listen": st.listen,
                    "boot_ms": boot.elapsed().as_millis() as u64,
                    "models": models.display().to_string(),
                    "model_present": Models::new(&models).has_minilm(),
                    "simulation": a.simulate_lying,
                    "metrics": metrics_at,
                });
                out.line(&line.to_string());
                tick = tokio::time::interval(Duration::from_secs(2));
                tick.tick().await;
            }
            if let Ok(mut g) = last.lock() {
                *g = Some(st.clone());
            }
            let mut v = serde_json::to_value(&st).unwrap_or_default();
            v["served"] = h.stats.served.load(std::sync::atomic::Ordering::Relaxed).into();
            v["declined"] = h.stats.declined.load(std::sync::atomic::Ordering::Relaxed).into();
            v["refused"] = h.stats.refused.load(std::sync::atomic::Ordering::Relaxed).into();
            v["receipts"] = h.stats.receipts.load(std::sync::atomic::Ordering::Relaxed).into();
            v["peer_table"] = serde_json::to_value(h.peers().await.unwrap_or_default()).unwrap_or_default();
            write_atomic(&file, &serde_json::to_vec_pretty(&v).unwrap_or_default());
        }
    })
}

fn write_atomic(path: &Path, bytes: &[u8]) {
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let tmp = path.with_extension("json.tmp");
    if std::fs::write(&tmp, bytes).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}
