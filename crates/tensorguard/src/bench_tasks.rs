//! `tensorguard bench tasks`: a real compute network on this machine — N node
//! processes on 127.0.0.1 and a submitter in this process — running M
//! embedding tasks with redundancy k while a share of the nodes is killed
//! with SIGKILL mid-run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use tg_compute::{NodeConfig, Redundancy, Stage, start};
use tg_tasks::{EMBED_COSINE_BOUND, Models, TaskInput};

use crate::errors::{Code, UserError, invalid};
use crate::output::Output;

/// `tensorguard bench tasks`.
#[derive(Debug, Args)]
pub struct TasksBenchArgs {
    /// Compute node processes.
    #[arg(long, default_value_t = 20)]
    pub agents: usize,
    /// Embedding tasks (one sentence each).
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
    /// Agreeing results per task (1–5), or `auto`.
    #[arg(long, default_value = "2")]
    pub redundancy: String,
    /// Share of the nodes killed with SIGKILL once a third of the tasks are done.
    #[arg(long, default_value_t = 0.2)]
    pub kill: f64,
    /// Nodes that lie (SIMULATION: perturbed embeddings).
    #[arg(long, default_value_t = 0)]
    pub liars: usize,
    /// CPU cap of each node, percent of one core.
    #[arg(long, default_value_t = 50)]
    pub cpu_cap: u32,
    /// Model directory shared by the nodes (read-only; hashes checked).
    #[arg(
        long,
        env = "TENSORGUARD_MODELS",
        value_name = "DIR",
        default_value = "target/models"
    )]
    pub models: PathBuf,
    /// Seconds of idle measurement before the tasks: CPU over the whole
    /// window, RSS sampled every 10 s and averaged per node. The default
    /// covers one provider republish (every 200 s), idle work a shorter
    /// window would miss or catch whole.
    #[arg(long, default_value_t = 200)]
    pub idle_secs: u64,
    /// Seconds from the last node's boot to the idle measurement: the
    /// bootstrap walks and the provider announcements a joining node repeats
    /// 10 s and 60 s after its first end, and their connections close (after
    /// 90 s without streams, with the default timeouts).
    #[arg(long, default_value_t = 160)]
    pub settle_secs: u64,
    /// Keep the work directory (node logs, the submitter's task store) and
    /// print where it is.
    #[arg(long)]
    pub keep_work: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

struct Proc {
    child: Child,
    dir: PathBuf,
    boot_ms: f64,
    peer: String,
    addr: String,
    killed: bool,
    liar: bool,
}

fn err(what: &str, why: impl ToString) -> UserError {
    UserError::new(
        Code::Internal,
        format!("bench tasks: {what}"),
        why.to_string(),
        "see the node logs in the work directory it names",
    )
}

/// utime + stime of a process, seconds (what getrusage reports for it).
fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tick)
}

fn rss_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

fn spawn(
    exe: &Path,
    dir: &Path,
    models: &Path,
    bootstrap: Option<&str>,
    cpu_cap: u32,
    liar: bool,
) -> Result<(Child, f64, String, String), UserError> {
    std::fs::create_dir_all(dir).map_err(|e| err("work dir", e))?;
    let log = std::fs::File::create(dir.join("node.log")).map_err(|e| err("log", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--data-dir")
        .arg(dir)
        .args([
            "compute",
            "start",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--cpu-cap",
            &cpu_cap.to_string(),
            "--models",
        ])
        .arg(models)
        .env("TENSORGUARD_KEY_PASSPHRASE", "bench-tasks")
        .env_remove("TENSORGUARD_KEY_PASSPHRASE_FILE")
        .stdout(Stdio::piped())
        .stderr(log);
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    if liar {
        cmd.arg("--simulate-lying");
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| err("spawn a node", e))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| err("node stdout", "missing"))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| err("node ready line", e))?;
    let boot_ms = started.elapsed().as_secs_f64() * 1000.0;
    let v: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| err(&format!("node in {} did not start", dir.display()), e))?;
    let peer = v["peer_id"].as_str().unwrap_or_default().to_string();
    let addr = format!("{}/p2p/{peer}", v["listen"][0].as_str().unwrap_or_default());
    Ok((child, boot_ms, peer, addr))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Runs the benchmark and returns its report.
pub fn run(a: &TasksBenchArgs, out: &Output) -> Result<serde_json::Value, UserError> {
    let redundancy = Redundancy::parse(&a.redundancy).ok_or_else(|| {
        invalid(
            format!("--redundancy {}", a.redundancy),
            "must be 1–5 or auto",
            "use e.g. 2",
        )
    })?;
    if a.agents < 2 || !(0.0..0.9).contains(&a.kill) || a.liars >= a.agents {
        return Err(invalid(
            "bench tasks",
            "needs ≥ 2 agents, --kill in [0, 0.9) and fewer liars than agents",
            "check the flags",
        ));
    }
    if !Models::new(&a.models).has_minilm() {
        return Err(UserError::new(
            Code::ArtifactRefused,
            format!("all-MiniLM-L6-v2 is not in {}", a.models.display()),
            "the benchmark runs the real model",
            format!("run scripts/compute/fetch_models.sh {}", a.models.display()),
        ));
    }
    let models = std::fs::canonicalize(&a.models).map_err(|e| err("models dir", e))?;
    let exe = std::env::current_exe().map_err(|e| err("this program", e))?;
    let work = tempfile::Builder::new()
        .prefix("tg-bench-tasks-")
        .tempdir()
        .map_err(|e| err("work dir", e))?;
    out.note(&format!(
        "bench tasks: {} nodes, {} tasks, redundancy {}, kill {:.0} %, work dir {}",
        a.agents,
        a.tasks,
        a.redundancy,
        a.kill * 100.0,
        work.path().display()
    ));
    // Nodes: the first is the bootstrap; liars are the last ones.
    let mut procs: Vec<Proc> = Vec::new();
    let mut boot_addr = None;
    for i in 0..a.agents {
        let liar = i >= a.agents - a.liars;
        let dir = work.path().join(format!("node{i:03}"));
        let (child, boot_ms, peer, addr) =
            spawn(&exe, &dir, &models, boot_addr.as_deref(), a.cpu_cap, liar)?;
        if boot_addr.is_none() {
            boot_addr = Some(addr.clone());
        }
        procs.push(Proc {
            child,
            dir,
            boot_ms,
            peer,
            addr,
            killed: false,
            liar,
        });
    }
    let result = measure(
        a,
        redundancy,
        &mut procs,
        boot_addr.unwrap_or_default(),
        work.path(),
        &models,
        out,
    );
    for p in &mut procs {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    if a.keep_work && result.is_ok() {
        let kept = work.keep();
        out.note(&format!(
            "bench tasks: work directory kept in {}",
            kept.display()
        ));
    } else if result.is_err() {
        // Keep the logs for a failed run.
        let kept = work.keep();
        out.note(&format!(
            "bench tasks failed; node logs kept in {}",
            kept.display()
        ));
    }
    result
}

fn measure(
    a: &TasksBenchArgs,
    redundancy: Redundancy,
    procs: &mut [Proc],
    boot_addr: String,
    work: &Path,
    models: &Path,
    out: &Output,
) -> Result<serde_json::Value, UserError> {
    let rt = crate::errors::runtime()?;
    // Idle: RSS and CPU of every node with no model loaded, once the
    // bootstrap has settled.
    std::thread::sleep(Duration::from_secs(a.settle_secs));
    let c0: Vec<f64> = procs
        .iter()
        .map(|p| cpu_secs(p.child.id()).unwrap_or(0.0))
        .collect();
    // Every node must be alive through the window: a dead one would read as
    // 0 MiB and 0 % and pull the means down.
    let all_alive = |procs: &mut [Proc]| -> Result<(), UserError> {
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(err(
                    "idle measurement",
                    format!(
                        "node in {} exited before the tasks ({status})",
                        p.dir.display()
                    ),
                ));
            }
        }
        Ok(())
    };
    all_alive(procs)?;
    let t0 = Instant::now();
    let mut rss_sum = vec![0.0f64; procs.len()];
    let mut rss_peak: f64 = 0.0;
    let mut samples = 0u32;
    loop {
        for (sum, p) in rss_sum.iter_mut().zip(procs.iter()) {
            let r = rss_mb(p.child.id()).ok_or_else(|| {
                err(
                    "idle measurement",
                    format!("no RSS for the node in {}", p.dir.display()),
                )
            })?;
            *sum += r;
            rss_peak = rss_peak.max(r);
        }
        samples += 1;
        let left = Duration::from_secs(a.idle_secs).saturating_sub(t0.elapsed());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_secs(10)));
    }
    let idle_wall = t0.elapsed().as_secs_f64().max(1e-3);
    all_alive(procs)?;
    let idle_cpu: Vec<f64> = procs
        .iter()
        .zip(&c0)
        .map(|(p, c)| (cpu_secs(p.child.id()).unwrap_or(0.0) - c) / idle_wall * 100.0)
        .collect();
    let idle_rss: Vec<f64> = rss_sum.iter().map(|s| s / f64::from(samples)).collect();
    let sentences: Vec<String> = (0..a.tasks).map(sentence).collect();
    let report = rt.block_on(async {
        let mut cfg = NodeConfig::new(models.to_path_buf(), work.join("submitter").join("wallet"));
        cfg.serve = false;
        cfg.store = Some(work.join("submitter").join("tasks.sqlite"));
        cfg.bootstrap = vec![boot_addr.parse().map_err(|e| err("bootstrap address", e))?];
        cfg.per_worker = 4;
        cfg.assign_timeout = Duration::from_secs(15);
        let secret: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(format!("bench-tasks-submitter/{}/{:?}", std::process::id(), Instant::now())).into()
        };
        let (h, _t) = start(secret, cfg).await.map_err(|e| err("submitter", e))?;
        let mut rx = h.progress();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let began = Instant::now();
        let mut submitted: HashMap<String, (usize, Instant)> = HashMap::new();
        for (i, s) in sentences.iter().enumerate() {
            let id = h.submit(TaskInput { kind: "embed".into(), texts: vec![s.clone()] }, redundancy).await.map_err(|e| err("submit", e))?;
            submitted.insert(hex::encode(id), (i, Instant::now()));
        }
        let to_kill = ((a.agents as f64) * a.kill).round() as usize;
        let mut latencies = Vec::new();
        let mut done = 0usize;
        let mut failed = Vec::new();
        let mut killed_at: Option<Instant> = None;
        let mut first_after_kill: Option<f64> = None;
        let mut last_done_at = Instant::now();
        let mut max_gap_after_kill: f64 = 0.0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
        while done + failed.len() < a.tasks {
            let p = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(p)) => p,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => return Err(err("progress", format!("lagged by {n}"))),
                Ok(Err(e)) => return Err(err("progress", e)),
                Err(_) => return Err(err("timeout", format!("{done} of {} tasks done after {} s", a.tasks, a.timeout))),
            };
            let Some((_, at)) = submitted.get(&p.task) else { continue };
            match p.stage {
                Stage::Done => {
                    done += 1;
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                    let now = Instant::now();
                    if let Some(k) = killed_at {
                        first_after_kill.get_or_insert(k.elapsed().as_secs_f64());
                        max_gap_after_kill = max_gap_after_kill.max(now.duration_since(last_done_at.max(k)).as_secs_f64());
                    }
                    last_done_at = now;
                }
                Stage::Failed { reason } => failed.push(reason),
                _ => {}
            }
            if killed_at.is_none() && to_kill > 0 && done >= a.tasks / 3 {
                // Kill honest nodes other than the bootstrap: the mesh must route around them.
                let mut n = 0;
                for p in procs.iter_mut().skip(1).filter(|p| !p.liar) {
                    if n == to_kill {
                        break;
                    }
                    // SIGKILL, sent directly (no `kill` process to spawn mid-run).
                    let _ = p.child.kill();
                    p.killed = true;
                    n += 1;
                }
                killed_at = Some(Instant::now());
                out.note(&format!("bench tasks: killed {n} nodes with SIGKILL after {done} tasks"));
            }
        }
        let wall = began.elapsed().as_secs_f64();
        h.flush(Duration::from_secs(5)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let st = &h.stats;
        let overhead_ms = st.overhead_us_sum.load(Ordering::Relaxed) as f64 / st.overhead_count.load(Ordering::Relaxed).max(1) as f64 / 1000.0;
        let mut over: Vec<f64> = st.overhead_us_samples.lock().map(|s| s.iter().map(|u| f64::from(*u) / 1000.0).collect()).unwrap_or_default();
        over.sort_by(f64::total_cmp);
        let peers = h.peers().await.unwrap_or_default();
        latencies.sort_by(f64::total_cmp);
        Ok::<_, UserError>(serde_json::json!({
            "done": done,
            "failed": failed.len(),
            "failure_reasons": failed.iter().take(5).collect::<Vec<_>>(),
            "wall_s": wall,
            "tasks_per_s": done as f64 / wall,
            "latency_ms": {"p50": pct(&latencies, 0.5), "p95": pct(&latencies, 0.95), "max": latencies.last().copied().unwrap_or(0.0)},
            "distribution_overhead_ms_per_result": overhead_ms,
            "distribution_overhead_ms": {"mean": overhead_ms, "p50": pct(&over, 0.5), "p95": pct(&over, 0.95), "p99": pct(&over, 0.99), "max": over.last().copied().unwrap_or(0.0), "results": over.len()},
            "reassigned": st.reassigned.load(Ordering::Relaxed),
            "disagreements": st.disagreements.load(Ordering::Relaxed),
            "killed": to_kill,
            "first_task_done_after_kill_s": first_after_kill,
            "longest_pause_after_kill_s": max_gap_after_kill,
            "excluded_peers": peers.iter().filter(|p| p.excluded).map(|p| p.peer.clone()).collect::<Vec<_>>(),
        }))
    })?;
    // Results equal a local run, to the tolerance.
    let store = tg_compute::store::TaskStore::open(&work.join("submitter").join("tasks.sqlite"))
        .map_err(|e| err("store", e))?;
    let local = Models::new(models)
        .minilm()
        .map_err(|e| err("local model", e))?;
    let mut worst = 1.0f32;
    let pending = store.pending_leaves().map_err(|e| err("store", e))?.len();
    // Compare each stored output with the local embedding of its sentence.
    let by_text: HashMap<&str, usize> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut local_vecs = vec![Vec::new(); sentences.len()];
    for (bi, batch) in sentences.chunks(32).enumerate() {
        for (j, v) in local
            .embed(batch)
            .map_err(|e| err("local embed", e))?
            .into_iter()
            .enumerate()
        {
            local_vecs[bi * 32 + j] = v;
        }
    }
    let mut checked = 0;
    for rec in store.all().map_err(|e| err("store", e))? {
        let (Some(tg_tasks::TaskOutput::Embeddings(v)), Some(i)) = (
            &rec.output,
            rec.input
                .texts
                .first()
                .and_then(|t| by_text.get(t.as_str())),
        ) else {
            continue;
        };
        let c = cosine(&v[0], &local_vecs[*i]);
        worst = worst.min(c);
        checked += 1;
    }
    let liars: Vec<serde_json::Value> = procs
        .iter()
        .filter(|p| p.liar)
        .map(|p| {
            let receipts = std::fs::read_to_string(p.dir.join("compute/wallet/receipts.jsonl")).map(|s| s.lines().count()).unwrap_or(0);
            let served = std::fs::read(p.dir.join("compute/node.json")).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()).map(|v| v["served"].clone());
            serde_json::json!({"peer": p.peer, "receipts": receipts, "served": served, "excluded": report["excluded_peers"].as_array().is_some_and(|x| x.iter().any(|e| e == &serde_json::json!(p.peer)))})
        })
        .collect();
    let boots: Vec<f64> = procs.iter().map(|p| p.boot_ms).collect();
    let mut report = report;
    report["agents"] = a.agents.into();
    report["tasks"] = a.tasks.into();
    report["redundancy"] = a.redundancy.clone().into();
    report["kill"] = a.kill.into();
    report["cpu_cap_pct"] = a.cpu_cap.into();
    report["pending_after"] = pending.into();
    report["results_checked_against_local"] = checked.into();
    report["worst_cosine_vs_local"] = f64::from(worst).into();
    report["cosine_bound"] = f64::from(EMBED_COSINE_BOUND).into();
    report["idle_rss_mb"] = serde_json::json!({"max": idle_rss.iter().copied().fold(0.0, f64::max), "mean": idle_rss.iter().sum::<f64>() / idle_rss.len() as f64, "peak_sample": rss_peak, "window_s": a.idle_secs});
    report["idle_cpu_pct"] = serde_json::json!({"max": idle_cpu.iter().copied().fold(0.0, f64::max), "mean": idle_cpu.iter().sum::<f64>() / idle_cpu.len() as f64});
    report["boot_to_ready_ms"] = serde_json::json!({"max": boots.iter().copied().fold(0.0, f64::max), "mean": boots.iter().sum::<f64>() / boots.len() as f64});
    report["liars"] = liars.into();
    report["addresses"] = procs
        .iter()
        .take(1)
        .map(|p| p.addr.clone())
        .collect::<Vec<_>>()
        .into();
    Ok(report)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n =
        a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 { d / n } else { 0.0 }
}

/// A distinct, realistic sentence for task `i`.
fn sentence(i: usize) -> String {
    const SUBJ: [&str; 10] = [
        "The robot",
        "A nurse",
        "The drone",
        "Our team",
        "The arm",
        "A volunteer",
        "The sensor",
        "The model",
        "A student",
        "The fleet",
    ];
    const VERB: [&str; 10] = [
        "picked up",
        "inspected",
        "moved",
        "cleaned",
        "measured",
        "labelled",
        "opened",
        "sorted",
        "repaired",
        "photographed",
    ];
    const OBJ: [&str; 10] = [
        "the red cube",
        "a blue drawer",
        "the kitchen door",
        "three boxes",
        "the solar panel",
        "a broken valve",
        "the window",
        "the pallet",
        "a glass of water",
        "the charging dock",
    ];
    format!(
        "{} {} {} at step {}.",
        SUBJ[i % 10],
        VERB[(i / 10) % 10],
        OBJ[(i / 100) % 10],
        i
    )
}

/// `tensorguard bench embed`.
#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    /// Model directory.
    #[arg(
        long,
        env = "TENSORGUARD_MODELS",
        value_name = "DIR",
        default_value = "target/models"
    )]
    pub models: PathBuf,
    /// Sentences embedded (the same generated sentences as `bench tasks`).
    #[arg(long, default_value_t = 256)]
    pub sentences: usize,
    /// Inference threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Single-node MiniLM throughput, batch 1 and batch 32 (after one warm-up pass).
pub fn embed(a: &EmbedBenchArgs) -> Result<serde_json::Value, UserError> {
    let models = Models::new(&a.models);
    let t = Instant::now();
    let m = models.minilm().map_err(|e| {
        UserError::new(
            Code::ArtifactRefused,
            "cannot load all-MiniLM-L6-v2",
            e.to_string(),
            format!("run scripts/compute/fetch_models.sh {}", a.models.display()),
        )
    })?;
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.max(1))
        .build()
        .map_err(|e| err("pool", e))?;
    let sentences: Vec<String> = (0..a.sentences).map(sentence).collect();
    let run = |batch: usize| -> Result<f64, UserError> {
        pool.install(|| {
            let t = Instant::now();
            for b in sentences.chunks(batch) {
                m.embed(b).map_err(|e| err("embed", e))?;
            }
            Ok(sentences.len() as f64 / t.elapsed().as_secs_f64())
        })
    };
    run(32)?; // warm-up
    let b1 = run(1)?;
    let b32 = run(32)?;
    Ok(
        serde_json::json!({"engine": "candle", "model": "all-MiniLM-L6-v2", "threads": a.threads, "sentences": a.sentences, "load_ms": load_ms, "sentences_per_s": {"batch1": b1, "batch32": b32}}),
    )
}
