//! Helpers for whole-federation tests: real `tensorguard` processes on
//! 127.0.0.1, each with its own data directory and identity.
#![allow(dead_code, clippy::unwrap_used)] // test support: a failed setup step should panic

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tg_types::Parameters;

pub mod served;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tensorguard")
}

/// Passphrase that seals the test nodes' keys (each test has its own data dirs).
pub const TEST_PASSPHRASE: &str = "e2e-test-passphrase";

/// `tensorguard` with the test passphrase in its environment.
pub fn tg_command() -> Command {
    let mut c = Command::new(bin());
    c.env("TENSORGUARD_KEY_PASSPHRASE", TEST_PASSPHRASE);
    c
}

/// Secure-aggregation settings of a test job.
#[derive(Clone, Copy)]
pub struct Secure {
    pub dropout: f64,
}

/// A test job file.
pub struct JobOpts {
    pub clients: u32,
    pub rounds: u32,
    pub min_clients: u32,
    pub secure: Option<Secure>,
    pub train_secs: f64,
    pub stage_secs: f64,
    pub hidden: u32,
    pub local_epochs: u32,
    /// A fixed port (so agents can find a restarted coordinator).
    pub port: u16,
    /// Sample-level DP: (noise multiplier, target ε).
    pub dp: Option<(f64, f64)>,
    /// `[attestation] required = true` (any measurement, explicitly).
    pub attestation: bool,
}

impl Default for JobOpts {
    fn default() -> Self {
        Self {
            clients: 10,
            rounds: 5,
            min_clients: 6,
            secure: Some(Secure { dropout: 0.3 }),
            train_secs: 120.0,
            stage_secs: 20.0,
            hidden: 64,
            local_epochs: 2,
            port: 0,
            dp: None,
            attestation: false,
        }
    }
}

impl JobOpts {
    pub fn toml(&self) -> String {
        let mut s = format!(
            "[job]\ndataset = \"digits\"\npartition = \"iid\"\nclients = {}\nrounds = {}\nmin_clients = {}\nseed = 42\nhidden = {}\nlocal_epochs = {}\n\n\
             [network]\nlisten = [\"/ip4/127.0.0.1/tcp/{}\"]\nmdns = false\n\n\
             [deadlines]\njoin_secs = 120\ntrain_secs = {}\nstage_secs = {}\n\n\
             [admission]\nenrollment = true\n",
            self.clients,
            self.rounds,
            self.min_clients,
            self.hidden,
            self.local_epochs,
            self.port,
            self.train_secs,
            self.stage_secs
        );
        if let Some((sigma, eps)) = self.dp {
            s.push_str(&format!(
                "\n[privacy]\nmode = \"local-sgd\"\ntarget_epsilon = {eps}\nnoise_multiplier = {sigma}\nsampling_rate = 0.1\nsteps_per_round = 10\n"
            ));
        }
        if self.attestation {
            s.push_str(
                "\n[attestation]\nrequired = true\n[attestation.policy]\nmeasurements = \"any\"\n",
            );
        }
        if let Some(sec) = self.secure {
            s.push_str(&format!(
                "\n[secure_aggregation]\nbits = 20\nclip = 10.0\ndropout = {}\n",
                sec.dropout
            ));
        }
        s
    }
}

/// A directory tree for one federation.
pub struct Fleet {
    pub root: tempfile::TempDir,
    pub coordinator: Option<Child>,
    pub agents: Vec<Option<Child>>,
    pub job: PathBuf,
    /// Extra arguments of `coordinator start`.
    pub coord_args: Vec<String>,
    /// Extra arguments of every `agent start`.
    pub agent_args: Vec<String>,
    /// The fleet's root (secure jobs): each agent started without its own
    /// `--certificate` or `--policy` gets an identity and a certificate
    /// from it, as an operator would issue them. None: agents get nothing.
    pub fleet_root: Option<ed25519_dalek::SigningKey>,
}

impl Fleet {
    pub fn new(opts: &JobOpts) -> Self {
        let root = tempfile::tempdir().unwrap();
        let job = root.path().join("job.toml");
        std::fs::write(&job, opts.toml()).unwrap();
        Self {
            root,
            coordinator: None,
            agents: Vec::new(),
            job,
            coord_args: Vec::new(),
            agent_args: Vec::new(),
            fleet_root: opts.secure.map(|_| {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).unwrap();
                ed25519_dalek::SigningKey::from_bytes(&seed)
            }),
        }
    }

    pub fn coord_dir(&self) -> PathBuf {
        self.root.path().join("coordinator")
    }

    pub fn agent_dir(&self, i: usize) -> PathBuf {
        self.root.path().join(format!("agent-{i}"))
    }

    /// One-time enrollment tokens.
    pub fn tokens(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let out = tg_command()
                    .arg("--data-dir")
                    .arg(self.coord_dir())
                    .args(["enroll", "create"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap().trim().to_owned()
            })
            .collect()
    }

    /// Starts (or restarts) the coordinator; returns its address.
    pub fn start_coordinator(&mut self) -> String {
        let _ = std::fs::remove_file(self.coord_dir().join("coordinator.addrs"));
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.path().join(name))
                .unwrap()
        };
        let child = tg_command()
            .arg("--data-dir")
            .arg(self.coord_dir())
            .args(["--json", "-v", "coordinator", "start", "--job"])
            .arg(&self.job)
            .args(&self.coord_args)
            .stdout(log("coordinator.out"))
            .stderr(log("coordinator.err"))
            .spawn()
            .unwrap();
        self.coordinator = Some(child);
        let addrs = self.coord_dir().join("coordinator.addrs");
        wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(&addrs)
                .ok()
                .and_then(|s| s.lines().next().map(str::to_owned))
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| {
            panic!(
                "coordinator did not listen: {}",
                self.log("coordinator.err")
            )
        })
    }

    /// Starts agent `i` of `n` on shard i/n.
    pub fn start_agent(&mut self, i: usize, n: usize, addr: &str, token: Option<&str>) {
        let log = |name: String| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.path().join(name))
                .unwrap()
        };
        let mut cmd = tg_command();
        cmd.arg("--data-dir")
            .arg(self.agent_dir(i))
            .args([
                "-v",
                "agent",
                "start",
                "--coordinator",
                addr,
                "--once",
                "--partition",
                "iid",
                "--seed",
                "42",
                // Plaintext jobs run here too; secure jobs are unaffected.
                "--allow-plaintext",
            ])
            .arg("--shard")
            .arg(format!("{i}/{n}"))
            .arg("--name")
            .arg(format!("robot-{i}"))
            .stdin(Stdio::null())
            .stdout(log(format!("agent-{i}.out")))
            .stderr(log(format!("agent-{i}.err")));
        if let Some(t) = token {
            cmd.arg("--enroll").arg(t);
        }
        cmd.args(&self.agent_args);
        let own = |flag: &str| self.agent_args.iter().any(|a| a == flag);
        if let Some(root) = &self.fleet_root
            && !own("--certificate")
            && !own("--policy")
        {
            let cert = tg_bench::fleet::certify_agent(
                &self.agent_dir(i),
                TEST_PASSPHRASE,
                root,
                &format!("robot-{i}"),
            )
            .unwrap();
            cmd.arg("--certificate").arg(cert);
        }
        let child = cmd.spawn().unwrap();
        if self.agents.len() <= i {
            self.agents.resize_with(i + 1, || None);
        }
        self.agents[i] = Some(child);
    }

    /// Starts `n` agents with fresh tokens.
    pub fn start_agents(&mut self, n: usize, addr: &str) {
        let tokens = self.tokens(n);
        for (i, t) in tokens.iter().enumerate() {
            self.start_agent(i, n, addr, Some(t));
        }
    }

    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal_agent(&self, i: usize, signal: &str) {
        let pid = self.agents[i].as_ref().unwrap().id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the coordinator to exit; returns its status and the JSON summary.
    pub fn wait_coordinator(&mut self, timeout: Duration) -> (ExitStatus, serde_json::Value) {
        let mut c = self.coordinator.take().expect("coordinator running");
        let status = wait_child(&mut c, timeout).unwrap_or_else(|| {
            panic!(
                "coordinator did not finish in {timeout:?}:\n{}",
                self.log("coordinator.err")
            )
        });
        let out = self.log("coordinator.out");
        let summary = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
        (status, summary)
    }

    /// Asserts that agents `0..n` exit cleanly within 30 s (after the job).
    pub fn agents_exit_cleanly(&mut self, n: usize) {
        for i in 0..n {
            let c = self.agents[i].as_mut().unwrap();
            let s = wait_child(c, Duration::from_secs(30)).expect("agent exits after the job");
            assert!(
                s.success(),
                "agent {i}: {}",
                self.log(&format!("agent-{i}.err"))
            );
        }
    }

    pub fn log(&self, name: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.root.path().join(name)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Opens the coordinator's store read-only.
    pub fn store(&self) -> tg_store::Store {
        tg_store::Store::open_existing(&self.coord_dir()).unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_coordinator();
        for i in 0..self.agents.len() {
            self.kill_agent(i);
        }
    }
}

pub fn wait_child(c: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(s)) = c.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(t) = f() {
            return Some(t);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

/// The job's head (with no rollback: the model it committed last).
pub fn latest_model(dir: &Path, job: &str) -> Parameters {
    let store = tg_store::Store::open_existing(dir).unwrap();
    let sha = store
        .model_head(job)
        .unwrap()
        .expect("a committed model")
        .sha256;
    Parameters::from_safetensors(&store.blobs().get(&sha).unwrap()).unwrap()
}

pub fn max_abs_diff(a: &Parameters, b: &Parameters) -> f32 {
    a.values()
        .zip(b.values())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The stages the coordinator recorded for round `round`, in order.
pub fn stages_of(dir: &Path, round: u32) -> Vec<String> {
    let Ok(store) = tg_store::Store::open_existing(dir) else {
        return Vec::new();
    };
    let Some(job) = store
        .list_jobs()
        .ok()
        .and_then(|j| j.first().and_then(|j| j.id.parse::<tg_types::JobId>().ok()))
    else {
        return Vec::new();
    };
    store
        .stages(job, round)
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.to_string())
        .collect()
}

/// The last stage the coordinator recorded for round `round`, if any.
pub fn stage_of(dir: &Path, round: u32) -> Option<String> {
    stages_of(dir, round).pop()
}

/// `GET /metrics` from `addr`, as text.
pub fn scrape(addr: &str) -> String {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// `GET path` over HTTP/1.0 with an optional bearer token: (status, body).
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    http_request(addr, "GET", path, token, "")
}

/// `method path` with `body` over HTTP/1.0 and an optional bearer token:
/// (status, body).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let _ = write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of a counter sample line starting with `prefix` (0 if absent).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// `tensorguard --data-dir DIR ARGS` with extra environment.
pub fn tg(dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = tg_command();
    c.arg("--data-dir").arg(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Asserts success and parses stdout as JSON (Null when it is not JSON).
pub fn ok(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}
