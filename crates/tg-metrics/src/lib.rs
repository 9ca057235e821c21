//! Prometheus metrics of a coordinator, an agent or a compute node: rounds,
//! stage latencies, bytes, peers, dropouts, rejected messages by reason, ε
//! spent; and for the compute network tasks by outcome, task latency,
//! CPU-cap use and verification disagreements ([`compute`]).
//!
//! Design decision: one small crate owns the metric names so coordinator and
//! agent export the same families under their own prefix. Metric handles are
//! cheap clones of shared atomics, so round loops and transports update them
//! without locks; the network layer's own counters are read in at scrape
//! time (through [`NetSnapshot`]) rather than counted twice. Serving them
//! over HTTP is `tg_coordinator::http`'s job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use prometheus_client;

pub mod compute;
pub use compute::{ComputeMetrics, ComputeSnapshot};

/// Anything served on `/metrics`: the Prometheus text exposition of a node.
pub trait Exposition: Send + Sync + 'static {
    /// The exposition, its counters read in as of now.
    fn encode(&self) -> String;
}

impl Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
}

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_owned(), value.to_owned())]
}

/// The network layer's counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetSnapshot {
    /// Application bytes received.
    pub bytes_in: u64,
    /// Application bytes sent.
    pub bytes_out: u64,
    /// Connected peers.
    pub peers: u64,
    /// Oversized frames refused.
    pub oversized: u64,
    /// Truncated frames refused.
    pub truncated: u64,
    /// Undecodable frames refused.
    pub malformed: u64,
}

type NetSource = Box<dyn Fn() -> NetSnapshot + Send + Sync>;

/// Free and total bytes of the filesystem holding the data directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskSnapshot {
    /// Bytes available to this process.
    pub available: u64,
    /// Size of the filesystem.
    pub size: u64,
}

type DiskSource = Box<dyn Fn() -> Option<DiskSnapshot> + Send + Sync>;

/// The metrics of one node.
pub struct Metrics {
    registry: Registry,
    rounds: Family<Labels, Counter>,
    stage_seconds: Family<Labels, Histogram>,
    dropouts: Counter,
    rejected: Family<Labels, Counter>,
    epsilon: Gauge<f64, AtomicU64>,
    round: Gauge,
    bytes_in: Counter,
    bytes_out: Counter,
    peers: Gauge,
    members: Gauge,
    planned: Gauge,
    epsilon_target: Gauge<f64, AtomicU64>,
    job_running: Gauge,
    last_round: Gauge,
    admissions: Family<Labels, Counter>,
    audit_failures: Counter,
    api_denied: Family<Labels, Counter>,
    disk_available: Gauge,
    disk_size: Gauge,
    net: std::sync::Mutex<Option<NetSource>>,
    disk: std::sync::Mutex<Option<DiskSource>>,
}

impl Metrics {
    /// Metrics named `tensorguard_<role>_…`.
    pub fn new(role: &str) -> Arc<Self> {
        let mut registry = Registry::with_prefix(format!("tensorguard_{role}"));
        let rounds = Family::<Labels, Counter>::default();
        registry.register("rounds", "Rounds finished, by status", rounds.clone());
        let stage_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 16))
        });
        registry.register(
            "stage_seconds",
            "Time from the previous stage transition to this one",
            stage_seconds.clone(),
        );
        let dropouts = Counter::default();
        registry.register(
            "dropouts",
            "Selected agents that did not finish their round",
            dropouts.clone(),
        );
        let rejected = Family::<Labels, Counter>::default();
        registry.register(
            "rejected_messages",
            "Messages refused, by reason",
            rejected.clone(),
        );
        let epsilon = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "epsilon_spent",
            "Privacy loss ε spent so far by the job",
            epsilon.clone(),
        );
        let round = Gauge::default();
        registry.register(
            "current_round",
            "Round in progress or last finished",
            round.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "received_bytes",
            "Application bytes received",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register("sent_bytes", "Application bytes sent", bytes_out.clone());
        let peers = Gauge::default();
        registry.register(
            "connected_peers",
            "Peers with an open connection",
            peers.clone(),
        );
        let members = Gauge::default();
        registry.register(
            "admitted_agents",
            "Agents admitted to the job and connected",
            members.clone(),
        );
        let planned = Gauge::default();
        registry.register(
            "planned_agents",
            "Agents the running job is planned for (0 when no job runs)",
            planned.clone(),
        );
        let epsilon_target = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "epsilon_target",
            "Privacy budget ε of the running job (0 without DP)",
            epsilon_target.clone(),
        );
        let job_running = Gauge::default();
        registry.register(
            "job_running",
            "1 while a job runs, else 0",
            job_running.clone(),
        );
        let last_round = Gauge::default();
        registry.register(
            "last_round_timestamp_seconds",
            "Unix time the last round finished",
            last_round.clone(),
        );
        let admissions = Family::<Labels, Counter>::default();
        registry.register(
            "admissions",
            "Join decisions, by outcome (accepted, refused) and reason",
            admissions.clone(),
        );
        let audit_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit entries that could not be written",
            audit_failures.clone(),
        );
        let api_denied = Family::<Labels, Counter>::default();
        registry.register(
            "api_denied_requests",
            "REST API requests refused, by reason (unauthenticated, forbidden)",
            api_denied.clone(),
        );
        let disk_available = Gauge::default();
        registry.register(
            "data_dir_available_bytes",
            "Bytes available on the data directory's filesystem",
            disk_available.clone(),
        );
        let disk_size = Gauge::default();
        registry.register(
            "data_dir_size_bytes",
            "Size of the data directory's filesystem",
            disk_size.clone(),
        );
        Arc::new(Self {
            registry,
            planned,
            epsilon_target,
            job_running,
            last_round,
            admissions,
            audit_failures,
            api_denied,
            disk_available,
            disk_size,
            disk: std::sync::Mutex::new(None),
            rounds,
            stage_seconds,
            dropouts,
            rejected,
            epsilon,
            round,
            bytes_in,
            bytes_out,
            peers,
            members,
            net: std::sync::Mutex::new(None),
        })
    }

    /// Exports the network layer's counters, read by `source` at each scrape.
    pub fn attach_network(&self, source: impl Fn() -> NetSnapshot + Send + Sync + 'static) {
        if let Ok(mut n) = self.net.lock() {
            *n = Some(Box::new(source));
        }
    }

    /// Exports the data directory's free space, read by `source` at each
    /// scrape.
    pub fn attach_disk(&self, source: impl Fn() -> Option<DiskSnapshot> + Send + Sync + 'static) {
        if let Ok(mut d) = self.disk.lock() {
            *d = Some(Box::new(source));
        }
    }

    /// A finished round.
    pub fn round_finished(&self, status: &str, dropouts: u64) {
        self.rounds.get_or_create(&label("status", status)).inc();
        self.dropouts.inc_by(dropouts);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_round.set(now as i64);
    }

    /// A job started (`planned` agents, ε budget if DP) or, with `None`, ended.
    pub fn job(&self, running: Option<(usize, Option<f64>)>) {
        let (planned, target) = running.unwrap_or((0, None));
        self.job_running.set(i64::from(running.is_some()));
        self.planned.set(planned as i64);
        self.epsilon_target.set(target.unwrap_or(0.0));
        if running.is_some() {
            self.epsilon.set(0.0);
        }
    }

    /// A join decision: `accepted`, or `refused` with its reason.
    pub fn admission(&self, outcome: &str, reason: &str) {
        self.admissions
            .get_or_create(&vec![
                ("outcome".to_owned(), outcome.to_owned()),
                ("reason".to_owned(), reason.to_owned()),
            ])
            .inc();
    }

    /// An audit entry could not be written.
    pub fn audit_write_failed(&self) {
        self.audit_failures.inc();
    }

    /// A refused API request (`unauthenticated` or `forbidden`).
    pub fn api_denied(&self, reason: &str) {
        self.api_denied
            .get_or_create(&label("reason", reason))
            .inc();
    }

    /// A stage transition, `seconds` after the previous one.
    pub fn stage(&self, round: u32, stage: &str, seconds: f64) {
        self.round.set(i64::from(round));
        self.stage_seconds
            .get_or_create(&label("stage", stage))
            .observe(seconds);
    }

    /// A refused message.
    pub fn rejected(&self, reason: &str) {
        self.rejected.get_or_create(&label("reason", reason)).inc();
    }

    /// How many messages were refused for `reason`.
    pub fn rejected_count(&self, reason: &str) -> u64 {
        self.rejected.get_or_create(&label("reason", reason)).get()
    }

    /// ε spent so far.
    pub fn set_epsilon(&self, epsilon: f64) {
        self.epsilon.set(epsilon);
    }

    /// Agents admitted and connected.
    pub fn set_members(&self, n: usize) {
        self.members.set(n as i64);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let snapshot = self.net.lock().ok().and_then(|n| n.as_ref().map(|f| f()));
        if let Some(net) = snapshot {
            let set = |c: &Counter, v: u64| c.inner().store(v, Ordering::Relaxed);
            set(&self.bytes_in, net.bytes_in);
            set(&self.bytes_out, net.bytes_out);
            self.peers.set(net.peers as i64);
            for (reason, v) in [
                ("oversized_frame", net.oversized),
                ("truncated_frame", net.truncated),
                ("malformed_frame", net.malformed),
            ] {
                set(&self.rejected.get_or_create(&label("reason", reason)), v);
            }
        }
        let disk = self
            .disk
            .lock()
            .ok()
            .and_then(|d| d.as_ref().and_then(|f| f()));
        if let Some(d) = disk {
            self.disk_available
                .set(i64::try_from(d.available).unwrap_or(i64::MAX));
            self.disk_size
                .set(i64::try_from(d.size).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
