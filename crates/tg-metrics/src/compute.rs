//! The metrics of a compute-network node: peers, tasks by outcome, task
//! latency, CPU-cap use, resident memory and verification disagreements.
//!
//! The node keeps its own counters (`tg_compute::NodeStats`); they are read
//! in at scrape time through a [`ComputeSnapshot`], so nothing is counted
//! twice and this crate needs nothing from the compute crate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::Exemplar;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::Exposition;

/// A compute node's counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct ComputeSnapshot {
    /// Peers with an open connection.
    pub peers: u64,
    /// Tasks this node submitted that were verified.
    pub tasks_done: u64,
    /// Tasks this node submitted that failed (with a reason).
    pub tasks_failed: u64,
    /// Tasks this node submitted that are still pending.
    pub tasks_pending: u64,
    /// Tasks this node ran for others.
    pub served: u64,
    /// Tasks this node declined (over its caps, queue full, unknown kind).
    pub declined: u64,
    /// Messages refused (malformed, oversize, bad signature, replayed).
    pub refused: u64,
    /// Assignments moved to another worker (timeout, decline, lost peer).
    pub reassigned: u64,
    /// Results that disagreed with the verified majority.
    pub disagreements: u64,
    /// Receipts stored in the wallet since start.
    pub receipts: u64,
    /// Points in the wallet.
    pub points: u64,
    /// CPU used by the worker over the cap's window, percent of one core.
    pub cpu_used_pct: f64,
    /// The CPU cap, percent of one core.
    pub cpu_cap_pct: f64,
    /// Resident set, bytes.
    pub rss_bytes: u64,
    /// Whether the node refuses work because it is over a cap.
    pub over_caps: bool,
    /// Tasks queued or running in the worker.
    pub queue: u64,
    /// Whether a model is loaded.
    pub model_loaded: bool,
    /// End-to-end latency of done tasks: (upper bound in seconds, tasks in
    /// that bucket, not cumulative); the last bound is `f64::INFINITY`.
    pub latency_buckets: Vec<(f64, u64)>,
    /// Sum of those latencies, seconds.
    pub latency_sum_s: f64,
    /// Results timed for distribution overhead.
    pub overhead_count: u64,
    /// Sum of their overhead (assignment to result minus the worker's own
    /// queue and compute time), seconds.
    pub overhead_sum_s: f64,
}

type ComputeSource = Box<dyn Fn() -> ComputeSnapshot + Send + Sync>;

/// A histogram whose buckets are read from the node's counters at scrape
/// time rather than observed here.
#[derive(Clone, Debug, Default)]
struct SnapshotHistogram(Arc<Mutex<HistogramState>>);

/// Sum, count, and (upper bound, count in that bucket) pairs.
type HistogramState = (f64, u64, Vec<(f64, u64)>);

impl TypedMetric for SnapshotHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for SnapshotHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.0.lock().map(|g| g.clone()).unwrap_or_default();
        let buckets = if buckets.is_empty() {
            vec![(f64::INFINITY, 0)]
        } else {
            buckets
        };
        encoder.encode_histogram::<NoLabelSet>(
            sum,
            count,
            &buckets,
            None::<&HashMap<usize, Exemplar<NoLabelSet, f64>>>,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

type Labels = Vec<(String, String)>;

/// The metrics of one compute node, named `tensorguard_compute_…`.
pub struct ComputeMetrics {
    registry: Registry,
    peers: Gauge,
    tasks: Family<Labels, Counter>,
    pending: Gauge,
    worker_tasks: Family<Labels, Counter>,
    refused: Counter,
    reassigned: Counter,
    disagreements: Counter,
    receipts: Counter,
    points: Gauge,
    cpu_utilisation: Gauge<f64, std::sync::atomic::AtomicU64>,
    cpu_cap: Gauge<f64, std::sync::atomic::AtomicU64>,
    rss: Gauge,
    over_caps: Gauge,
    queue: Gauge,
    model_loaded: Gauge,
    latency: SnapshotHistogram,
    overhead: Gauge<f64, std::sync::atomic::AtomicU64>,
    source: Mutex<Option<ComputeSource>>,
}

fn outcome(o: &str) -> Labels {
    vec![("outcome".to_owned(), o.to_owned())]
}

impl ComputeMetrics {
    /// Empty metrics; [`ComputeMetrics::attach`] gives them their source.
    pub fn new() -> Arc<Self> {
        let mut r = Registry::with_prefix("tensorguard_compute");
        let peers = Gauge::default();
        r.register(
            "connected_peers",
            "Peers with an open connection",
            peers.clone(),
        );
        let tasks = Family::<Labels, Counter>::default();
        r.register(
            "tasks",
            "Tasks this node submitted, by outcome (done: verified; failed: given up with a reason); rate()*3600 gives tasks per hour",
            tasks.clone(),
        );
        let pending = Gauge::default();
        r.register(
            "pending_tasks",
            "Tasks this node submitted that are not yet done or failed",
            pending.clone(),
        );
        let worker_tasks = Family::<Labels, Counter>::default();
        r.register(
            "worker_tasks",
            "Tasks assigned to this node as a worker, by outcome (ran, declined)",
            worker_tasks.clone(),
        );
        let refused = Counter::default();
        r.register(
            "refused_messages",
            "Messages refused: malformed, oversize, unknown kind, bad or replayed signature",
            refused.clone(),
        );
        let reassigned = Counter::default();
        r.register(
            "reassignments",
            "Assignments moved to another worker after a timeout, a decline or a lost peer",
            reassigned.clone(),
        );
        let disagreements = Counter::default();
        r.register(
            "verification_disagreements",
            "Results that disagreed with the verified majority of their task",
            disagreements.clone(),
        );
        let receipts = Counter::default();
        r.register(
            "receipts",
            "Signed receipts stored in this node's wallet since it started",
            receipts.clone(),
        );
        let points = Gauge::default();
        r.register("points", "Points in this node's wallet", points.clone());
        let cpu_utilisation = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "cpu_cap_utilisation_ratio",
            "Worker CPU used over the cap's window, as a fraction of the cap",
            cpu_utilisation.clone(),
        );
        let cpu_cap = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "cpu_cap_percent",
            "The worker's CPU cap, percent of one core",
            cpu_cap.clone(),
        );
        let rss = Gauge::default();
        r.register(
            "resident_memory_bytes",
            "Resident set of the node process",
            rss.clone(),
        );
        let over_caps = Gauge::default();
        r.register(
            "over_caps",
            "1 while the node refuses work because it is over a cap, else 0",
            over_caps.clone(),
        );
        let queue = Gauge::default();
        r.register(
            "worker_queue",
            "Tasks queued or running in the worker",
            queue.clone(),
        );
        let model_loaded = Gauge::default();
        r.register(
            "model_loaded",
            "1 once a model is loaded (models load lazily, on the first task)",
            model_loaded.clone(),
        );
        let latency = SnapshotHistogram::default();
        r.register(
            "task_latency_seconds",
            "End-to-end latency of tasks this node submitted, from submission to verified",
            latency.clone(),
        );
        let overhead = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        r.register(
            "distribution_overhead_mean_seconds",
            "Mean time an assignment spent outside the worker's queue and compute (serialisation and routing)",
            overhead.clone(),
        );
        Arc::new(Self {
            registry: r,
            peers,
            tasks,
            pending,
            worker_tasks,
            refused,
            reassigned,
            disagreements,
            receipts,
            points,
            cpu_utilisation,
            cpu_cap,
            rss,
            over_caps,
            queue,
            model_loaded,
            latency,
            overhead,
            source: Mutex::new(None),
        })
    }

    /// Reads the node's counters through `source` at each scrape.
    pub fn attach(&self, source: impl Fn() -> ComputeSnapshot + Send + Sync + 'static) {
        if let Ok(mut s) = self.source.lock() {
            *s = Some(Box::new(source));
        }
    }

    fn load(&self, s: &ComputeSnapshot) {
        let set = |c: &Counter, v: u64| c.inner().store(v, std::sync::atomic::Ordering::Relaxed);
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.peers.set(int(s.peers));
        set(&self.tasks.get_or_create(&outcome("done")), s.tasks_done);
        set(
            &self.tasks.get_or_create(&outcome("failed")),
            s.tasks_failed,
        );
        self.pending.set(int(s.tasks_pending));
        set(&self.worker_tasks.get_or_create(&outcome("ran")), s.served);
        set(
            &self.worker_tasks.get_or_create(&outcome("declined")),
            s.declined,
        );
        set(&self.refused, s.refused);
        set(&self.reassigned, s.reassigned);
        set(&self.disagreements, s.disagreements);
        set(&self.receipts, s.receipts);
        self.points.set(int(s.points));
        self.cpu_utilisation.set(if s.cpu_cap_pct > 0.0 {
            s.cpu_used_pct / s.cpu_cap_pct
        } else {
            0.0
        });
        self.cpu_cap.set(s.cpu_cap_pct);
        self.rss.set(int(s.rss_bytes));
        self.over_caps.set(i64::from(s.over_caps));
        self.queue.set(int(s.queue));
        self.model_loaded.set(i64::from(s.model_loaded));
        let count = s.latency_buckets.iter().map(|(_, n)| n).sum();
        if let Ok(mut h) = self.latency.0.lock() {
            *h = (s.latency_sum_s, count, s.latency_buckets.clone());
        }
        self.overhead.set(if s.overhead_count > 0 {
            s.overhead_sum_s / s.overhead_count as f64
        } else {
            0.0
        });
    }
}

impl Exposition for ComputeMetrics {
    fn encode(&self) -> String {
        let snapshot = self
            .source
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|f| f()));
        if let Some(s) = snapshot {
            self.load(&s);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn a_scrape_reads_the_nodes_counters() {
        let m = ComputeMetrics::new();
        m.attach(|| ComputeSnapshot {
            peers: 7,
            tasks_done: 40,
            tasks_failed: 2,
            served: 11,
            declined: 3,
            disagreements: 5,
            cpu_used_pct: 25.0,
            cpu_cap_pct: 50.0,
            rss_bytes: 30 << 20,
            latency_buckets: vec![(0.01, 10), (0.05, 20), (0.1, 10), (f64::INFINITY, 0)],
            latency_sum_s: 1.5,
            overhead_count: 4,
            overhead_sum_s: 0.04,
            ..Default::default()
        });
        let t = m.encode();
        assert_eq!(
            value(&t, "tensorguard_compute_connected_peers"),
            Some(7.0),
            "{t}"
        );
        assert_eq!(
            value(&t, "tensorguard_compute_tasks_total{outcome=\"done\"}"),
            Some(40.0)
        );
        assert_eq!(
            value(&t, "tensorguard_compute_tasks_total{outcome=\"failed\"}"),
            Some(2.0)
        );
        assert_eq!(
            value(
                &t,
                "tensorguard_compute_worker_tasks_total{outcome=\"declined\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            value(&t, "tensorguard_compute_verification_disagreements_total"),
            Some(5.0)
        );
        assert_eq!(
            value(&t, "tensorguard_compute_cpu_cap_utilisation_ratio"),
            Some(0.5)
        );
        assert_eq!(
            value(&t, "tensorguard_compute_resident_memory_bytes"),
            Some(f64::from(30u32 << 20))
        );
        // The histogram is cumulative on the wire.
        assert_eq!(
            value(
                &t,
                "tensorguard_compute_task_latency_seconds_bucket{le=\"0.05\"}"
            ),
            Some(30.0),
            "{t}"
        );
        assert_eq!(
            value(
                &t,
                "tensorguard_compute_task_latency_seconds_bucket{le=\"+Inf\"}"
            ),
            Some(40.0)
        );
        assert_eq!(
            value(&t, "tensorguard_compute_task_latency_seconds_count"),
            Some(40.0)
        );
        assert_eq!(
            value(&t, "tensorguard_compute_distribution_overhead_mean_seconds"),
            Some(0.01)
        );
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn without_a_source_the_exposition_is_still_valid() {
        let t = ComputeMetrics::new().encode();
        assert!(
            t.contains("tensorguard_compute_task_latency_seconds_bucket{le=\"+Inf\"} 0"),
            "{t}"
        );
        assert!(t.ends_with("# EOF\n"));
    }
}
