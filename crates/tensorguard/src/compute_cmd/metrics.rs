//! `/metrics` of a compute node: its counters and last status as a
//! Prometheus scrape sees them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tg_compute::{LATENCY_BOUNDS_MS, NodeStats, NodeStatus};
use tg_metrics::ComputeSnapshot;

/// The node's last status, refreshed by `compute start` every 2 s.
pub type LastStatus = Arc<Mutex<Option<NodeStatus>>>;

/// The scrape's view: counters read live, gauges from the last status.
pub fn snapshot(stats: &NodeStats, last: &LastStatus) -> ComputeSnapshot {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut latency_buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_MS
        .iter()
        .zip(&stats.latency_buckets)
        .map(|(ms, n)| (*ms as f64 / 1000.0, load(n)))
        .collect();
    let beyond = stats
        .latency_buckets
        .get(LATENCY_BOUNDS_MS.len())
        .map_or(0, load);
    latency_buckets.push((f64::INFINITY, beyond));
    let mut s = ComputeSnapshot {
        tasks_done: load(&stats.done),
        tasks_failed: load(&stats.failed),
        served: load(&stats.served),
        declined: load(&stats.declined),
        refused: load(&stats.refused),
        reassigned: load(&stats.reassigned),
        disagreements: load(&stats.disagreements),
        receipts: load(&stats.receipts),
        latency_buckets,
        latency_sum_s: load(&stats.latency_ms_sum) as f64 / 1000.0,
        overhead_count: load(&stats.overhead_count),
        overhead_sum_s: load(&stats.overhead_us_sum) as f64 / 1e6,
        ..Default::default()
    };
    if let Some(st) = last.lock().ok().and_then(|g| g.clone()) {
        s.peers = st.peers as u64;
        s.tasks_pending = st.tasks.0;
        s.points = st.points;
        s.cpu_used_pct = f64::from(st.capability.cpu_used_pct);
        s.cpu_cap_pct = f64::from(st.capability.cpu_cap_pct);
        s.over_caps = st.capability.over_caps;
        s.queue = u64::from(st.capability.queue);
        s.model_loaded = st.model_loaded;
        s.rss_bytes = st.rss_bytes;
    }
    s
}
