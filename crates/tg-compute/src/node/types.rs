//! The node's public types: its settings, the progress of a task, its
//! counters, its status and its view of a peer.

use super::*;

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to join the DHT through.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers with mDNS.
    pub mdns: bool,
    /// A network on one LAN: AutoNAT tests private addresses too.
    pub lan: bool,
    /// Relays (`/…/p2p/RELAY`) to listen through when not reachable
    /// directly: the node is then `relayed` and reachable by its circuit address.
    pub relays: Vec<Multiaddr>,
    /// Directory of model artifacts (fetched into it from peers when missing).
    pub models_dir: PathBuf,
    /// Run tasks for others (a volunteer worker) as well as submit.
    pub serve: bool,
    /// Worker settings.
    pub worker: WorkerConfig,
    /// Submitter's task store; `None` keeps no tasks (a worker only).
    pub store: Option<PathBuf>,
    /// Directory of the wallet.
    pub wallet_dir: PathBuf,
    /// Time a worker has to answer an assignment (with its result, or with
    /// word that it queued the task).
    pub assign_timeout: Duration,
    /// Time a worker that said it queued a task has to return its result:
    /// a cold worker loads its model first, which takes seconds on a busy
    /// machine. A worker that disconnects loses its tasks at once.
    pub accepted_timeout: Duration,
    /// Bytes of model files the node may keep that it fetched itself;
    /// the least recently used are evicted to make room for a fetch. A
    /// models directory the user gave is never evicted.
    pub cache_max_bytes: u64,
    /// Tasks in flight to one worker at most.
    pub per_worker: usize,
    /// Verification policy.
    pub policy: Policy,
    /// How long provider records live, and how often they are republished.
    pub provider_ttl: Duration,
    /// A task not verified this long after it was submitted (or resumed) fails with a reason.
    pub task_deadline: Duration,
    /// How long a task that every capable peer has answered, still short of
    /// its quorum, waits for new workers before it fails.
    pub starve_grace: Duration,
    /// Connections without open streams close after this long. A
    /// connection that carried an assignment is held open beyond it, on
    /// both ends, for a fixed time from the assignment (the accepted
    /// timeout plus 15 s: as long as a submitter waits for a queued task),
    /// and one that carried a result for the accepted timeout plus the
    /// starve grace plus 15 s, so that results and receipts can come back
    /// over them, even to a node behind NAT. Holds are not released early.
    /// The rest (DHT walks, provider announcements, probes) are done in a
    /// second and redial on demand, while every open connection holds its
    /// transport buffers (~100 KiB): a volunteer node keeps few.
    pub idle_timeout: Duration,
}

impl NodeConfig {
    /// Defaults: listen on loopback TCP, serve, 50 % CPU cap.
    pub fn new(models_dir: PathBuf, wallet_dir: PathBuf) -> Self {
        Self {
            listen: vec![
                "/ip4/127.0.0.1/tcp/0"
                    .parse()
                    .unwrap_or_else(|_| Multiaddr::empty()),
            ],
            bootstrap: Vec::new(),
            mdns: false,
            lan: false,
            relays: Vec::new(),
            models_dir,
            serve: true,
            worker: WorkerConfig::default(),
            store: None,
            wallet_dir,
            assign_timeout: Duration::from_secs(20),
            accepted_timeout: Duration::from_secs(75),
            cache_max_bytes: 2 << 30,
            per_worker: 4,
            policy: Policy::default(),
            provider_ttl: Duration::from_secs(600),
            task_deadline: Duration::from_secs(600),
            starve_grace: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Where a submitted task is, for progress displays.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "stage", rename_all = "lowercase")]
pub enum Stage {
    /// Looking for capable peers.
    Searching,
    /// Sent to these workers.
    Assigned {
        /// Workers (peer ids).
        to: Vec<String>,
    },
    /// A worker took it into its queue.
    Computing {
        /// Worker.
        by: String,
    },
    /// A quorum of results agrees.
    Verified {
        /// Agreeing workers.
        by: Vec<String>,
        /// Disagreeing workers.
        rejected: Vec<String>,
    },
    /// Done, with its output stored.
    Done,
    /// Given up.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A progress event of a task.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Task id (hex).
    pub task: String,
    /// Its parent, for a subtask.
    pub parent: Option<String>,
    /// Stage.
    #[serde(flatten)]
    pub stage: Stage,
}

/// Counters of a node, for status and metrics.
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Tasks done (verified) by this submitter.
    pub done: AtomicU64,
    /// Tasks failed.
    pub failed: AtomicU64,
    /// Assignments reassigned after a timeout, decline or lost peer.
    pub reassigned: AtomicU64,
    /// Results in a disagreeing minority.
    pub disagreements: AtomicU64,
    /// Bad messages refused (malformed, oversize, bad signature, unknown kind).
    pub refused: AtomicU64,
    /// Tasks this worker ran.
    pub served: AtomicU64,
    /// Tasks this worker declined.
    pub declined: AtomicU64,
    /// Receipts stored.
    pub receipts: AtomicU64,
    /// Frames being sent now.
    pub sending: AtomicU64,
    /// Results received in time, and the sum of their distribution overhead
    /// (assignment to result, minus the worker's queue and compute time), µs.
    pub overhead_count: AtomicU64,
    /// See `overhead_count`.
    pub overhead_us_sum: AtomicU64,
    /// The first [`OVERHEAD_SAMPLES`] overheads, µs, for percentiles.
    pub overhead_us_samples: std::sync::Mutex<Vec<u32>>,
    /// Sum of end-to-end latencies of done tasks, ms.
    pub latency_ms_sum: AtomicU64,
    /// Latency histogram of done tasks: ≤10, 50, 100, 250, 500, 1000, 2500, 5000, 10000 ms, more.
    pub latency_buckets: [AtomicU64; 10],
}

/// Overheads kept for percentiles (4 bytes each).
pub const OVERHEAD_SAMPLES: usize = 1 << 16;

/// Upper bounds of the latency histogram's buckets, ms.
pub const LATENCY_BOUNDS_MS: [u64; 9] = [10, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// A node's status.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Peer id.
    pub peer_id: String,
    /// Public key (hex).
    pub node: String,
    /// Listen addresses.
    pub listen: Vec<String>,
    /// Connected peers.
    pub peers: usize,
    /// Reachability as AutoNAT last said (public / private / unknown).
    pub reachability: String,
    /// Capability record.
    pub capability: Capability,
    /// Resident set, bytes.
    pub rss_bytes: u64,
    /// Whether a model is loaded.
    pub model_loaded: bool,
    /// Tasks pending / done / failed at this submitter.
    pub tasks: (u64, u64, u64),
    /// Points in the wallet.
    pub points: u64,
    /// SIMULATION mode (a lying worker) — never a production node.
    pub simulation: bool,
}

impl NodeStatus {
    /// The node's public key as bytes.
    pub fn node_key(&self) -> [u8; 32] {
        hex::decode(&self.node)
            .ok()
            .and_then(|v| v.try_into().ok())
            .unwrap_or([0; 32])
    }
}

/// One peer, as `tensorguard peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerRow {
    /// Peer id.
    pub peer: String,
    /// Address.
    pub addr: String,
    /// Agent version (role/version).
    pub agent: Option<String>,
    /// Protocol version.
    pub protocol: Option<String>,
    /// Round trip, ms.
    pub rtt_ms: Option<f64>,
    /// Standing score with this node as submitter (1 = unknown or clean).
    pub reputation: f64,
    /// Whether this node gives it no more work.
    pub excluded: bool,
}
