//! Prometheus metrics of a coordinator or an agent: rounds, stage latencies,
//! bytes, peers, dropouts, rejected messages by reason, and ε spent.
//!
//! Design decision: one small crate owns the metric names so coordinator and
//! agent export the same families under their own prefix. Metric handles are
//! cheap clones of shared atomics, so round loops and transports update them
//! without locks; the network layer's own counters are read in at scrape
//! time (through [`NetSnapshot`]) rather than counted twice. Serving HTTP is
//! the binary's job.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use prometheus_client;

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
    net: std::sync::Mutex<Option<NetSource>>,
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
        Arc::new(Self {
            registry,
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

    /// A finished round.
    pub fn round_finished(&self, status: &str, dropouts: u64) {
        self.rounds.get_or_create(&label("status", status)).inc();
        self.dropouts.inc_by(dropouts);
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
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
