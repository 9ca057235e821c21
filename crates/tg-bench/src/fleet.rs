//! `tensorguard bench fleet`: a coordinator and N agent processes of the
//! `tensorguard` binary on 127.0.0.1, measured from outside — what an
//! operator would see.
//!
//! Reported: agent start-to-ready (process spawn until the coordinator's
//! welcome, as each agent reports it), idle agent RSS (VmRSS of every agent
//! once all have joined, before round 1 starts), and the coordinator's own
//! time per round: the round's wall time minus the stage in which agents
//! train, from the stage transitions the coordinator records.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;

use crate::{BenchError, Result};

/// What to run.
#[derive(Clone, Debug)]
pub struct FleetArgs {
    /// The `tensorguard` binary whose processes are measured.
    pub exe: PathBuf,
    /// Agents (without a job file).
    pub agents: usize,
    /// Rounds (without a job file).
    pub rounds: u32,
    /// Secure aggregation (without a job file).
    pub secure_aggregation: bool,
    /// A job file to run instead, on loopback.
    pub job: Option<PathBuf>,
}

fn internal(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Fleet(format!("{what}: {e}"))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the benchmark and returns its report.
pub fn run(a: &FleetArgs) -> Result<serde_json::Value> {
    let exe = &a.exe;
    // A fresh directory every run (kept: the report names it for the logs);
    // one named by the process id could be a stale run's, keys and all.
    let root = tempfile::Builder::new()
        .prefix("tensorguard-bench-fleet-")
        .tempdir()
        .map_err(|e| internal("cannot create a work dir", e))?
        .keep();
    let (job, n, partition, seed, secure) = match &a.job {
        Some(path) => loopback_job(path)?,
        None => {
            let n = a.agents;
            let mut job = format!(
                "[job]\ndataset = \"digits\"\npartition = \"iid\"\nclients = {n}\nrounds = {}\nmin_clients = {}\nlocal_epochs = 1\nseed = 42\n\n\
                 [network]\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\n\n[deadlines]\njoin_secs = 300\ntrain_secs = 300\nstage_secs = 60\n",
                a.rounds,
                n.div_ceil(2)
            );
            if a.secure_aggregation {
                job.push_str("\n[secure_aggregation]\nbits = 20\nclip = 10.0\ndropout = 0.3\n");
            }
            (job, n, "iid".to_owned(), 42, a.secure_aggregation)
        }
    };
    // A job whose DP noise is simulated from a seed runs only when allowed,
    // and its report says so.
    let simulated = tg_job::parse_file("(bench job)", job.as_bytes())
        .map_err(|e| BenchError::Args(e.to_string()))?
        .job
        .simulated_noise_seed()
        .is_some();
    let job_path = root.join("job.toml");
    std::fs::write(&job_path, job).map_err(|e| internal("cannot write the job file", e))?;
    let coord_dir = root.join("coordinator");
    let log = |name: &str| {
        std::fs::File::create(root.join(name)).map_err(|e| internal("cannot create a log", e))
    };
    // The bench's nodes live in a temporary directory removed afterwards:
    // their keys are sealed under a throwaway passphrase of their own.
    let mut pass_bytes = [0u8; 16];
    getrandom::fill(&mut pass_bytes).map_err(|e| internal("the OS RNG failed", e))?;
    let pass = hex::encode(pass_bytes);
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let o = Command::new(exe)
            .arg("--data-dir")
            .arg(&coord_dir)
            .args(["enroll", "create"])
            .output()
            .map_err(|e| internal("enroll create", e))?;
        tokens.push(String::from_utf8_lossy(&o.stdout).trim().to_owned());
    }
    let mut procs = Kill(Vec::new());
    procs.0.push(
        Command::new(exe)
            .env(tg_trust::passphrase::PASSPHRASE_ENV, &pass)
            .arg("--data-dir")
            .arg(&coord_dir)
            .args(["--json", "coordinator", "start"])
            .args(simulated.then_some("--allow-simulated"))
            .arg("--job")
            .arg(&job_path)
            .stdout(log("coordinator.out")?)
            .stderr(log("coordinator.err")?)
            .spawn()
            .map_err(|e| internal("cannot start the coordinator", e))?,
    );
    let addrs = coord_dir.join("coordinator.addrs");
    let started = Instant::now();
    let addr = loop {
        if let Some(a) = std::fs::read_to_string(&addrs)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
        {
            break a;
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(internal("the coordinator did not start", root.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Secure rounds need a roster the agents can check: the bench acts as
    // the fleet's operator, with a fleet root of its own for this run.
    let fleet_root = secure.then(|| {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice()).map(|()| SigningKey::from_bytes(&seed))
    });
    let fleet_root = fleet_root
        .transpose()
        .map_err(|e| internal("the OS RNG failed", e))?;
    let mut agent_pids = Vec::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        let dir = root.join(format!("agent-{i}"));
        let certificate = match &fleet_root {
            Some(r) => Some(certify_agent(&dir, &pass, r, &format!("bench-{i}"))?),
            None => None,
        };
        let c = Command::new(exe)
            .env(tg_trust::passphrase::PASSPHRASE_ENV, &pass)
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--json",
                "agent",
                "start",
                "--once",
                "--coordinator",
                &addr,
                "--enroll",
                t,
            ])
            .args(["--shard", &format!("{i}/{n}"), "--partition", &partition])
            .args(["--seed", &seed.to_string()])
            // The benchmark's own agents: plaintext jobs are allowed.
            .arg("--allow-plaintext")
            .args(
                certificate
                    .iter()
                    .flat_map(|c| [OsStr::new("--certificate"), c.as_os_str()]),
            )
            .stdin(Stdio::null())
            .stdout(log(&format!("agent-{i}.out"))?)
            .stderr(log(&format!("agent-{i}.err"))?)
            .spawn()
            .map_err(|e| internal("cannot start an agent", e))?;
        agent_pids.push(c.id());
        procs.0.push(c);
    }
    // Start-to-ready as each agent reports it.
    let ready_ms = |i: usize| -> Option<f64> {
        let mut s = String::new();
        std::fs::File::open(root.join(format!("agent-{i}.err")))
            .ok()?
            .read_to_string(&mut s)
            .ok()?;
        s.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "ready")
            .and_then(|v| v["ready_ms"].as_f64())
    };
    let wait_all = Instant::now();
    // Idle RSS: sampled as each agent reports ready (joined, waiting for
    // round 1) — a plaintext job can finish moments after the last joins.
    let mut rss_at_ready: Vec<Option<f64>> = vec![None; n];
    let mut ready: Vec<f64> = loop {
        let r: Vec<Option<f64>> = (0..n).map(ready_ms).collect();
        for (i, r) in r.iter().enumerate() {
            if r.is_some() && rss_at_ready[i].is_none() {
                rss_at_ready[i] = agent_pids
                    .get(i)
                    .and_then(|&p| rss_kib(p))
                    .map(|k| k as f64 / 1024.0);
            }
        }
        if r.iter().all(Option::is_some) {
            break r.into_iter().flatten().collect();
        }
        if wait_all.elapsed() > Duration::from_secs(300) {
            return Err(internal("not every agent joined", root.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let all_joined_s = wait_all.elapsed().as_secs_f64();
    let mut rss: Vec<f64> = rss_at_ready.into_iter().flatten().collect();
    let coordinator = procs
        .0
        .first_mut()
        .ok_or_else(|| internal("no coordinator", ""))?;
    let t0 = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = coordinator.try_wait() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            return Err(internal("the job did not finish", root.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(internal("the coordinator failed", root.display()));
    }
    let rounds = round_overheads(&coord_dir)?;
    let overhead: Vec<f64> = rounds
        .iter()
        .map(|r| r["coordinator_ms"].as_f64().unwrap_or(f64::NAN))
        .collect();
    let json = serde_json::json!({
        "bench": "fleet",
        "agents": n,
        "secure_aggregation": secure,
        "job_file": a.job,
        "final_model_sha256": final_model_sha256(&coord_dir)?,
        "epsilon": coordinator_summary(&root)["epsilon"],
        "simulation": coordinator_summary(&root)["simulation"],
        "final_accuracy": coordinator_summary(&root)["final_accuracy"],
        "machine": {"cpus": std::thread::available_parallelism().map_or(1, usize::from)},
        "agent_start_to_ready_ms": {"median": median(&mut ready), "max": ready.iter().copied().fold(0.0, f64::max)},
        "all_agents_joined_s": all_joined_s,
        "idle_agent_rss_mib": {"median": median(&mut rss), "max": rss.iter().copied().fold(0.0, f64::max)},
        "coordinator_overhead_ms_per_round": {"median": median(&mut overhead.clone())},
        "rounds": rounds,
        "work_dir": root,
    });
    Ok(json)
}

/// Gives the agent whose data directory is `dir` its identity key (sealed
/// with `pass`, as the agent will open it) and a certificate for it from the
/// fleet root `root`, valid for a day; returns the certificate file. This is
/// what a fleet's operator does with `keys certify` for each agent.
pub fn certify_agent(dir: &Path, pass: &str, root: &SigningKey, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| internal("cannot create an agent's dir", e))?;
    let pass = tg_trust::passphrase::Passphrase::new(pass.to_owned())
        .map_err(|e| internal("the passphrase", e))?;
    let key = tg_trust::node::identity(dir, None, &pass)
        .map_err(|e| internal("cannot create an agent's identity", e))?;
    let now = tg_trust::audit::now_secs();
    let cert = tg_proto::Certificate::issue(
        root,
        key.signing_key().verifying_key().to_bytes(),
        name,
        now.saturating_sub(60),
        now + 86_400,
    );
    let file = dir.join("fleet.cert");
    std::fs::write(&file, cert.to_text()).map_err(|e| internal("cannot write a certificate", e))?;
    Ok(file)
}

/// A job file made to run on this machine: the file's job, listening on
/// loopback with generous deadlines unless it sets its own. Returns (file
/// text, agents, partition, seed, secure).
fn loopback_job(path: &Path) -> Result<(String, usize, String, u64, bool)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BenchError::Args(format!(
            "cannot read job file {}: {e} (examples: deploy/examples/*.toml)",
            path.display()
        ))
    })?;
    // The same parser and refusals as everywhere else.
    let job = tg_job::parse_file(&path.display().to_string(), text.as_bytes())
        .map_err(|e| BenchError::Args(e.to_string()))?;
    let mut doc: toml::Table = text
        .parse()
        .map_err(|e| internal("the job file is not TOML", e))?;
    let mut network = toml::Table::new();
    network.insert(
        "listen".into(),
        toml::Value::Array(vec!["/ip4/127.0.0.1/tcp/0".into()]),
    );
    doc.insert("network".into(), toml::Value::Table(network));
    if !doc.contains_key("deadlines") {
        let mut d = toml::Table::new();
        for (k, v) in [("join_secs", 300), ("train_secs", 300), ("stage_secs", 60)] {
            d.insert(k.into(), toml::Value::Integer(v));
        }
        doc.insert("deadlines".into(), toml::Value::Table(d));
    }
    let text = toml::to_string(&doc).map_err(|e| internal("cannot write the job file", e))?;
    Ok((
        text,
        job.job.spec().clients as usize,
        job.job.spec().partition.to_string(),
        job.job.spec().seed,
        job.job.is_secure(),
    ))
}

/// The coordinator's store and the (one) job it ran.
fn bench_job(dir: &Path) -> Result<(tg_store::Store, String)> {
    let store = tg_store::Store::open_existing(dir)
        .map_err(|e| internal("cannot open the coordinator's store", e))?;
    let jobs = store
        .list_jobs()
        .map_err(|e| internal("cannot list jobs", e))?;
    let job = jobs
        .first()
        .map(|j| j.id.clone())
        .ok_or_else(|| internal("no job recorded", dir.display()))?;
    Ok((store, job))
}

/// The coordinator's closing summary (its JSON stdout), or Null.
fn coordinator_summary(root: &Path) -> serde_json::Value {
    std::fs::read(root.join("coordinator.out"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The model the job ended on (its last committed round's).
fn final_model_sha256(dir: &Path) -> Result<Option<String>> {
    let (store, job) = bench_job(dir)?;
    let rounds = store
        .rounds(&job)
        .map_err(|e| internal("cannot read rounds", e))?;
    Ok(rounds.iter().rev().find_map(|r| r.model_sha256.clone()))
}

/// Per round: wall time, the training stage, and the rest (the coordinator's overhead).
fn round_overheads(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let (store, job) = bench_job(dir)?;
    let job: tg_types::JobId = job
        .parse()
        .map_err(|e| internal("the recorded job id is not valid", e))?;
    let mut rounds = Vec::new();
    for r in 1.. {
        let stages = store
            .stage_times(job, r)
            .map_err(|e| internal("cannot read stages", e))?;
        if stages.is_empty() {
            break;
        }
        use tg_types::record::RoundStage;
        let at = |stage: RoundStage| stages.iter().find(|(s, _)| *s == stage).map(|(_, t)| *t);
        let (Some(first), Some(last)) = (stages.first().map(|s| s.1), stages.last().map(|s| s.1))
        else {
            break;
        };
        // Training: from the model broadcast to the first upload stage.
        let train_end = at(RoundStage::AdvertiseKeysCollected).or(at(RoundStage::Collected));
        let training = match (at(RoundStage::ModelSent), train_end) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        };
        rounds.push(serde_json::json!({
            "round": r,
            "wall_ms": last - first,
            "training_ms": training,
            "coordinator_ms": (last - first) - training,
            "stages": stages.iter().map(|(s, t)| serde_json::json!([s, t - first])).collect::<Vec<_>>(),
        }));
    }
    Ok(rounds)
}
