//! A compute node: worker and submitter in one process, on tg-net.
//!
//! Submitting: tasks are stored first, then assigned to the best-scoring
//! capable peers found through DHT provider records (score: standing, load,
//! round trip). Each assignment has a deadline; a timeout, decline or lost
//! peer sends the task to another peer. Results are verified (signature,
//! input and output digests), grouped by agreement, and a quorum decides;
//! agreeing workers get signed receipts, a disagreeing minority loses
//! standing and, after `exclude_after` strikes, gets no more work.
//!
//! Working: a capable node advertises its kinds and models as provider
//! records, queues assignments up to its bound, runs them on the capped
//! worker, and answers with signed results; it stores the receipts it gets.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rand::Rng;
use serde::Serialize;
use tg_net::{Event, Multiaddr, PeerId};
use tg_tasks::{MINILM, Models, Plan, TaskInput, TaskOutput, kind_by_name, kinds};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::cap::rss_bytes;
use crate::policy::{Policy, Redundancy, Standings, Verdict, judge};
use crate::store::{TaskState, TaskStore};
use crate::wallet::Wallet;
use crate::worker::{self, Done, Job, WorkerConfig, WorkerStats};
use crate::{Capability, ComputeError, Msg, Receipt, SignedResult, TaskId, artifacts, task_hex};

/// Artifact parts served at once (each 512 KiB).
const MAX_PARTS_IN_FLIGHT: usize = 4;
/// Results whose receipts a worker still accepts.
const MAX_REMEMBERED_RESULTS: usize = 100_000;
/// Valid results after which a worker's agreement can strike a minority.
const ESTABLISHED_AFTER: u32 = 3;

/// DHT key under which nodes that run `kind` provide.
pub fn kind_key(kind: &str) -> Vec<u8> {
    format!("/tensorguard/compute/kind/{kind}").into_bytes()
}

/// DHT key under which nodes holding a model's artifacts provide.
pub fn model_key(id: &tg_tasks::ArtifactId) -> Vec<u8> {
    format!("/tensorguard/compute/model/{id}").into_bytes()
}

/// Settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to join the DHT through.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers with mDNS.
    pub mdns: bool,
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
    /// Time a worker has to answer an assignment.
    pub assign_timeout: Duration,
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
            models_dir,
            serve: true,
            worker: WorkerConfig::default(),
            store: None,
            wallet_dir,
            assign_timeout: Duration::from_secs(20),
            per_worker: 4,
            policy: Policy::default(),
            provider_ttl: Duration::from_secs(120),
            task_deadline: Duration::from_secs(600),
            starve_grace: Duration::from_secs(60),
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
    /// Sum of end-to-end latencies of done tasks, ms.
    pub latency_ms_sum: AtomicU64,
    /// Latency histogram of done tasks: ≤10, 50, 100, 250, 500, 1000, 2500, 5000, 10000 ms, more.
    pub latency_buckets: [AtomicU64; 10],
}

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

enum Cmd {
    Submit {
        input: TaskInput,
        redundancy: Redundancy,
        reply: oneshot::Sender<Result<TaskId, ComputeError>>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerRow>>,
    },
    Wallet {
        reply: oneshot::Sender<crate::WalletExport>,
    },
}

/// A handle on a running node.
#[derive(Clone)]
pub struct Handle {
    cmds: mpsc::Sender<Cmd>,
    progress: broadcast::Sender<Progress>,
    /// Counters.
    pub stats: Arc<NodeStats>,
    /// Peer id.
    pub peer_id: PeerId,
}

impl Handle {
    /// Stores and starts a task; returns its id.
    pub async fn submit(
        &self,
        input: TaskInput,
        redundancy: Redundancy,
    ) -> Result<TaskId, ComputeError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Submit {
                input,
                redundancy,
                reply,
            })
            .await
            .map_err(|_| ComputeError::Stopped)?;
        rx.await.map_err(|_| ComputeError::Stopped)?
    }

    /// Waits (at most `limit`) until every frame in flight is delivered, e.g.
    /// the receipts of the last verified tasks before the process exits.
    pub async fn flush(&self, limit: Duration) {
        let end = Instant::now() + limit;
        while self.stats.sending.load(Ordering::Relaxed) > 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Progress events of every task from now on.
    pub fn progress(&self) -> broadcast::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Status.
    pub async fn status(&self) -> Result<NodeStatus, ComputeError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Status { reply })
            .await
            .map_err(|_| ComputeError::Stopped)?;
        rx.await.map_err(|_| ComputeError::Stopped)
    }

    /// Connected peers with latency and reputation.
    pub async fn peers(&self) -> Result<Vec<PeerRow>, ComputeError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Peers { reply })
            .await
            .map_err(|_| ComputeError::Stopped)?;
        rx.await.map_err(|_| ComputeError::Stopped)
    }

    /// The wallet's export.
    pub async fn wallet(&self) -> Result<crate::WalletExport, ComputeError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Wallet { reply })
            .await
            .map_err(|_| ComputeError::Stopped)?;
        rx.await.map_err(|_| ComputeError::Stopped)
    }
}

struct Assignment {
    since: Instant,
    accepted: bool,
}

struct Active {
    input: TaskInput,
    parent: Option<TaskId>,
    redundancy: Redundancy,
    /// Results wanted now (grows to break ties).
    want: usize,
    quorum: usize,
    budget: usize,
    assigned: HashMap<PeerId, Assignment>,
    results: Vec<(PeerId, SignedResult)>,
    tried: HashSet<PeerId>,
    created: Instant,
    searching_told: bool,
    starved_since: Option<Instant>,
}

enum Internal {
    SendFailed {
        peer: PeerId,
        task: Option<TaskId>,
        error: String,
    },
}

struct Node {
    key: SigningKey,
    client: tg_net::Client,
    cfg: NodeConfig,
    models: Arc<Models>,
    store: Option<TaskStore>,
    wallet: Wallet,
    stats: Arc<NodeStats>,
    wstats: Arc<WorkerStats>,
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    progress: broadcast::Sender<Progress>,
    active: HashMap<TaskId, Active>,
    standings: Standings,
    providers: Vec<PeerId>,
    providers_at: Option<Instant>,
    provider_query: Option<oneshot::Receiver<Vec<PeerId>>>,
    inflight: HashMap<PeerId, usize>,
    internal: mpsc::Sender<Internal>,
    reachability: String,
    advertised: bool,
    advertise_at: Instant,
    verified_model: bool,
    serving: Arc<std::sync::Mutex<HashSet<PeerId>>>,
    sent: HashMap<(TaskId, PeerId), ([u8; 32], u32)>,
    sent_order: std::collections::VecDeque<(TaskId, PeerId)>,
    rtts: HashMap<PeerId, f64>,
    rtts_at: Option<Instant>,
    fetching: Option<artifacts::Fetch>,
}

/// Starts a node. `secret` is its Ed25519 secret (the libp2p identity and the signing key).
pub async fn start(
    secret: [u8; 32],
    cfg: NodeConfig,
) -> Result<(Handle, tokio::task::JoinHandle<()>), ComputeError> {
    let key = SigningKey::from_bytes(&secret);
    let mut net = tg_net::Config::new(tg_net::Role::Compute, cfg.listen.clone());
    net.mdns = cfg.mdns;
    net.provider_ttl = cfg.provider_ttl;
    net.provider_republish = cfg.provider_ttl / 3;
    net.max_providers_per_key = 4096;
    net.request_timeout = Duration::from_secs(30);
    let (client, events, event_loop) =
        tg_net::new(secret, net).map_err(|e| ComputeError::Net(e.to_string()))?;
    tokio::spawn(event_loop.run());
    for addr in &cfg.bootstrap {
        client
            .dial(addr.clone())
            .await
            .map_err(|e| ComputeError::Net(e.to_string()))?;
    }
    let store = match &cfg.store {
        Some(p) => Some(TaskStore::open(p)?),
        None => None,
    };
    let wallet = Wallet::open(&cfg.wallet_dir, key.verifying_key().to_bytes())?;
    let models = Arc::new(Models::new(cfg.models_dir.clone()));
    let stats = Arc::new(NodeStats::default());
    let wstats = Arc::new(WorkerStats::default());
    let (done_tx, done_rx) = mpsc::channel(cfg.worker.max_queue as usize + 8);
    let jobs = if cfg.serve {
        Some(worker::spawn(
            cfg.worker.clone(),
            models.clone(),
            wstats.clone(),
            done_tx,
        )?)
    } else {
        None
    };
    let (cmds, cmd_rx) = mpsc::channel(256);
    let (progress, _) = broadcast::channel(4096);
    let (internal, internal_rx) = mpsc::channel(4096);
    let peer_id = client.local_peer_id();
    let mut node = Node {
        key,
        client,
        cfg,
        models,
        store,
        wallet,
        stats: stats.clone(),
        wstats,
        jobs,
        progress: progress.clone(),
        active: HashMap::new(),
        standings: Standings::default(),
        providers: Vec::new(),
        providers_at: None,
        provider_query: None,
        inflight: HashMap::new(),
        internal,
        reachability: "unknown".into(),
        advertised: false,
        advertise_at: Instant::now(),
        verified_model: false,
        serving: Default::default(),
        sent: HashMap::new(),
        sent_order: Default::default(),
        rtts: HashMap::new(),
        rtts_at: None,
        fetching: None,
    };
    node.resume()?;
    let task = tokio::spawn(async move { node.run(events, cmd_rx, done_rx, internal_rx).await });
    Ok((
        Handle {
            cmds,
            progress,
            stats,
            peer_id,
        },
        task,
    ))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn key_of(peer: &PeerId) -> Option<[u8; 32]> {
    tg_net::ed25519_key_of(peer)
}

impl Node {
    fn tell(&self, task: &TaskId, parent: Option<TaskId>, stage: Stage) {
        let _ = self.progress.send(Progress {
            task: task_hex(task),
            parent: parent.map(|p| task_hex(&p)),
            stage,
        });
    }

    /// Loads pending tasks from the store (after a restart).
    fn resume(&mut self) -> Result<(), ComputeError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        self.standings.by_worker = store.standings()?;
        let leaves = store.pending_leaves()?;
        let parents = store.pending_parents()?;
        for (id, rec) in leaves {
            let parent = rec.parent.as_deref().and_then(crate::store::id_from_hex);
            self.activate(id, rec.input, rec.redundancy, parent);
        }
        // A crash between a last subtask and its parent's combine.
        for p in parents {
            self.maybe_combine(p);
        }
        Ok(())
    }

    fn activate(
        &mut self,
        id: TaskId,
        input: TaskInput,
        redundancy: Redundancy,
        parent: Option<TaskId>,
    ) {
        let (want, quorum) = match redundancy {
            Redundancy::Fixed(k) => (usize::from(k), usize::from(k)),
            Redundancy::Adaptive => (1, 1),
        };
        let budget = want.max(2) + self.cfg.policy.tie_breakers;
        self.active.insert(
            id,
            Active {
                input,
                parent,
                redundancy,
                want,
                quorum,
                budget,
                assigned: HashMap::new(),
                results: Vec::new(),
                tried: HashSet::new(),
                created: Instant::now(),
                searching_told: false,
                starved_since: None,
            },
        );
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut cmds: mpsc::Receiver<Cmd>,
        mut done: mpsc::Receiver<Done>,
        mut internal: mpsc::Receiver<Internal>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut bootstrapped = false;
        loop {
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev, &mut bootstrapped).await,
                    None => return,
                },
                cmd = cmds.recv() => match cmd {
                    Some(c) => self.on_cmd(c).await,
                    None => return,
                },
                Some(d) = done.recv() => self.on_done(d),
                Some(i) = internal.recv() => self.on_internal(i),
                _ = tick.tick() => self.on_tick().await,
            }
        }
    }

    fn send(&self, peer: PeerId, msg: Msg, task: Option<TaskId>) {
        let client = self.client.clone();
        let internal = self.internal.clone();
        let bytes = msg.encode();
        let stats = self.stats.clone();
        stats.sending.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = client.send(peer, bytes).await {
                let _ = internal.try_send(Internal::SendFailed {
                    peer,
                    task,
                    error: e.to_string(),
                });
            }
            stats.sending.fetch_sub(1, Ordering::Relaxed);
        });
    }

    async fn on_event(&mut self, ev: Event, bootstrapped: &mut bool) {
        match ev {
            Event::Connected { .. } if !*bootstrapped => {
                *bootstrapped = self.client.bootstrap().await.is_ok();
                self.advertise().await;
            }
            Event::Connected { .. } => self.advertise().await,
            Event::Discovered { addr, peer } => {
                let _ = self.client.add_address(peer, addr.clone()).await;
                let _ = self.client.dial(addr).await;
            }
            Event::Disconnected { peer } => self.lost(peer, "the worker disconnected"),
            Event::NatStatus(s) => {
                self.reachability = if s.contains("Public") {
                    "public".into()
                } else if s.contains("Private") {
                    "private".into()
                } else {
                    "unknown".into()
                }
            }
            Event::Frame { peer, frame } => match Msg::decode(&frame) {
                Ok(m) => self.on_msg(peer, m),
                Err(e) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, "error[E121]: refused a compute message — {e} — the peer runs another version or is hostile; nothing to do");
                }
            },
            _ => {}
        }
    }

    /// Provides this node's kinds and models in the DHT when it can serve them.
    async fn advertise(&mut self) {
        if !self.cfg.serve {
            return;
        }
        if !self.verified_model && self.models.has_minilm() {
            // Hash every file once before serving or advertising it.
            let root = self.cfg.models_dir.clone();
            match tokio::task::spawn_blocking(move || MINILM.verify(&root)).await {
                Ok(Ok(())) => self.verified_model = true,
                Ok(Err(e)) => {
                    tracing::warn!(
                        "error[E120]: the model here does not match its pins — {e} — it is neither served nor advertised"
                    );
                    return;
                }
                Err(_) => return,
            }
        }
        let over = self.over_caps().is_some();
        if self.verified_model && !over && !self.advertised {
            let mut ok = true;
            for k in kinds() {
                ok &= self
                    .client
                    .start_providing(&kind_key(k.name()))
                    .await
                    .is_ok();
            }
            ok &= self
                .client
                .start_providing(&model_key(&MINILM.id()))
                .await
                .is_ok();
            self.advertised = ok;
        } else if over && self.advertised {
            for k in kinds() {
                let _ = self.client.stop_providing(&kind_key(k.name())).await;
            }
            self.advertised = false;
        }
    }

    fn over_caps(&self) -> Option<String> {
        let rss = rss_bytes();
        if rss > self.cfg.worker.mem_cap_bytes {
            return Some(format!(
                "resident set {} MiB is over the {} MiB cap",
                rss >> 20,
                self.cfg.worker.mem_cap_bytes >> 20
            ));
        }
        let q = self.wstats.queue.load(Ordering::Relaxed);
        if q >= self.cfg.worker.max_queue {
            return Some(format!(
                "{q} tasks queued, the bound is {}",
                self.cfg.worker.max_queue
            ));
        }
        None
    }

    fn capability(&self) -> Capability {
        let reason = if self.cfg.serve {
            self.over_caps()
        } else {
            Some("not serving tasks".into())
        };
        let held = self.models.has_minilm();
        Capability {
            protocol: crate::COMPUTE_PROTOCOL,
            kinds: if self.cfg.serve && held {
                kinds().iter().map(|k| k.name().to_string()).collect()
            } else {
                Vec::new()
            },
            models: if held {
                vec![MINILM.id().to_hex()]
            } else {
                Vec::new()
            },
            cpu_cap_pct: self.cfg.worker.cpu_cap_pct,
            cpu_used_pct: self.wstats.cpu_used_centi_pct.load(Ordering::Relaxed) / 100,
            queue: self.wstats.queue.load(Ordering::Relaxed),
            over_caps: reason.is_some(),
            reason,
        }
    }

    fn on_msg(&mut self, peer: PeerId, m: Msg) {
        match m {
            Msg::Probe => self.send(peer, Msg::Capability(self.capability()), None),
            Msg::Assign { task, input } => self.on_assign(peer, task, input),
            Msg::Accepted { task } => {
                if let Some(a) = self.active.get_mut(&task)
                    && let Some(x) = a.assigned.get_mut(&peer).filter(|x| !x.accepted)
                {
                    x.accepted = true;
                    let parent = a.parent;
                    self.tell(
                        &task,
                        parent,
                        Stage::Computing {
                            by: peer.to_string(),
                        },
                    );
                }
            }
            Msg::Decline { task, code, reason } => {
                tracing::info!(%peer, task = %task_hex(&task), "worker declined: {code} {reason}");
                self.unassign(peer, task, true);
            }
            Msg::Result(r) => self.on_result(peer, r),
            Msg::Receipt(r) => self.on_receipt(peer, r),
            Msg::Fetch { id, offset } => self.on_fetch(peer, id, offset),
            Msg::Part {
                id,
                offset,
                total,
                data,
            } => {
                if let Some(f) = self.fetching.as_mut() {
                    match f.on_part(peer, id, offset, total, &data) {
                        Ok(Some(next)) => self.send(peer, next, None),
                        Ok(None) => {}
                        Err(e) => {
                            self.stats.refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(%peer, "{e}");
                        }
                    }
                }
            }
            Msg::NoArtifact { id } => {
                if let Some(f) = self.fetching.as_mut() {
                    f.on_missing(peer, id);
                }
            }
            Msg::Capability(_) => {}
        }
    }

    /// Serves one part of a verified artifact: at most one part in flight per
    /// peer and [`MAX_PARTS_IN_FLIGHT`] in all, read off the event loop; more
    /// asks are answered "not here" so the asker tries another provider.
    fn on_fetch(&mut self, peer: PeerId, id: [u8; 32], offset: u64) {
        let busy = {
            let mut serving = self
                .serving
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !self.verified_model
                || serving.len() >= MAX_PARTS_IN_FLIGHT
                || serving.contains(&peer)
            {
                true
            } else {
                serving.insert(peer);
                false
            }
        };
        if busy {
            self.send(peer, Msg::NoArtifact { id }, None);
            return;
        }
        let (root, client, serving, stats) = (
            self.cfg.models_dir.clone(),
            self.client.clone(),
            self.serving.clone(),
            self.stats.clone(),
        );
        stats.sending.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let reply = tokio::task::spawn_blocking(move || artifacts::serve(&root, &id, offset))
                .await
                .unwrap_or(Msg::NoArtifact { id });
            let _ = client.send(peer, reply.encode()).await;
            serving
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&peer);
            stats.sending.fetch_sub(1, Ordering::Relaxed);
        });
    }

    fn decline(&self, peer: PeerId, task: TaskId, code: &str, reason: String) {
        self.stats.declined.fetch_add(1, Ordering::Relaxed);
        self.send(
            peer,
            Msg::Decline {
                task,
                code: code.into(),
                reason,
            },
            None,
        );
    }

    fn on_assign(&mut self, peer: PeerId, task: TaskId, input: TaskInput) {
        let Some(jobs) = &self.jobs else {
            return self.decline(peer, task, "E125", "this node does not serve tasks".into());
        };
        let kind = match kind_by_name(&input.kind) {
            Ok(k) => k,
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                return self.decline(peer, task, "E123", e.to_string());
            }
        };
        if let Err(e) = kind.validate(&input) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let code = if matches!(e, tg_tasks::TaskError::Oversize { .. }) {
                "E122"
            } else {
                "E121"
            };
            return self.decline(peer, task, code, e.to_string());
        }
        if !matches!(kind.plan(&input), Ok(Plan::Run)) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return self.decline(
                peer,
                task,
                "E121",
                format!(
                    "{} fans out at the submitter; a worker runs its subtasks only",
                    input.kind
                ),
            );
        }
        if !self.verified_model {
            return self.decline(
                peer,
                task,
                "E120",
                "the model is not here (or not verified) yet".into(),
            );
        }
        if let Some(why) = self.over_caps() {
            return self.decline(peer, task, "E125", why);
        }
        self.wstats.queue.fetch_add(1, Ordering::Relaxed);
        if jobs
            .send(Job {
                task,
                input,
                from: peer,
                queued: Instant::now(),
            })
            .is_err()
        {
            self.wstats.queue.fetch_sub(1, Ordering::Relaxed);
            return self.decline(peer, task, "E125", "the worker stopped".into());
        }
        self.send(peer, Msg::Accepted { task }, None);
    }

    fn on_done(&mut self, d: Done) {
        match d.output {
            Ok(out) => {
                self.stats.served.fetch_add(1, Ordering::Relaxed);
                let r =
                    SignedResult::sign(&self.key, d.task, &d.input, out, d.queued_ms, d.compute_ms);
                self.remember_result(d.task, d.from, r.output_digest, d.input.texts.len() as u32);
                self.send(d.from, Msg::Result(r), None);
            }
            Err(e) => self.decline(d.from, d.task, e.code(), e.to_string()),
        }
    }

    fn remember_result(&mut self, task: TaskId, to: PeerId, digest: [u8; 32], points: u32) {
        if self.sent.insert((task, to), (digest, points)).is_none() {
            self.sent_order.push_back((task, to));
        }
        while self.sent_order.len() > MAX_REMEMBERED_RESULTS {
            if let Some(old) = self.sent_order.pop_front() {
                self.sent.remove(&old);
            }
        }
    }

    fn on_receipt(&mut self, peer: PeerId, r: Receipt) {
        if key_of(&peer) != Some(r.submitter) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "error[E124]: refused a receipt — it is signed for another submitter than the sending peer — nothing to do");
            return;
        }
        // Only a receipt for a result this node sent to that peer, for that
        // output, and for no more points than the task's texts, is stored.
        match self.sent.get(&(r.task, peer)) {
            Some((digest, points)) if *digest == r.output_digest && r.points <= *points => {}
            _ => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "error[E124]: refused a receipt — it pays for no result this node sent that peer (or for more than it was worth) — nothing to do");
                return;
            }
        }
        match self.wallet.append(&r) {
            Ok(true) => {
                self.sent.remove(&(r.task, peer));
                self.stats.receipts.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {
                self.sent.remove(&(r.task, peer));
            }
            Err(e) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, "error[E124]: refused a receipt — {e}");
            }
        }
    }

    fn unassign(&mut self, peer: PeerId, task: TaskId, count_timeout: bool) {
        let mut struck = None;
        if let Some(a) = self.active.get_mut(&task)
            && a.assigned.remove(&peer).is_some()
        {
            if let Some(n) = self.inflight.get_mut(&peer) {
                *n = n.saturating_sub(1);
            }
            self.stats.reassigned.fetch_add(1, Ordering::Relaxed);
            if count_timeout && let Some(k) = key_of(&peer) {
                self.standings.timeout(k);
                struck = Some(k);
            }
        }
        if let Some(k) = struck {
            self.save_standing(&k);
        }
    }

    fn lost(&mut self, peer: PeerId, _why: &str) {
        let tasks: Vec<TaskId> = self
            .active
            .iter()
            .filter(|(_, a)| a.assigned.contains_key(&peer))
            .map(|(t, _)| *t)
            .collect();
        for t in tasks {
            self.unassign(peer, t, true);
        }
        self.providers.retain(|p| *p != peer);
    }

    fn on_internal(&mut self, i: Internal) {
        match i {
            Internal::SendFailed { peer, task, error } => {
                tracing::debug!(%peer, "send failed: {error}");
                if let Some(t) = task {
                    self.unassign(peer, t, true);
                }
            }
        }
    }

    fn on_result(&mut self, peer: PeerId, r: SignedResult) {
        let task = r.task;
        let Some(a) = self.active.get_mut(&task) else {
            // Late (already decided) or never assigned: a replay is dropped here.
            return;
        };
        if !a.assigned.contains_key(&peer) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(worker) = key_of(&peer) else { return };
        let shaped = kind_by_name(&a.input.kind).is_ok_and(|k| k.well_formed(&a.input, &r.output));
        if let Err(e) = r.verify(&a.input, &worker).and_then(|()| {
            if shaped {
                Ok(())
            } else {
                Err(ComputeError::Malformed(
                    "output has the wrong shape for its input".into(),
                ))
            }
        }) {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "error[E124]: refused a result — {e} — the worker's result is treated as invalid");
            self.unassign(peer, task, false);
            let _ = self.standings.invalid(worker, &self.cfg.policy);
            self.save_standing(&worker);
            return;
        }
        if let Some(x) = a.assigned.remove(&peer) {
            let net = x.since.elapsed().as_micros() as u64;
            let work = (u64::from(r.queued_ms) + u64::from(r.compute_ms)) * 1000;
            self.stats.overhead_count.fetch_add(1, Ordering::Relaxed);
            self.stats
                .overhead_us_sum
                .fetch_add(net.saturating_sub(work), Ordering::Relaxed);
        }
        if let Some(n) = self.inflight.get_mut(&peer) {
            *n = n.saturating_sub(1);
        }
        a.results.push((peer, r));
        self.decide(task);
    }

    fn decide(&mut self, task: TaskId) {
        self.decide_with(task, false);
    }

    /// Judges a task's results. `force` (every capable peer has answered):
    /// decide with what there is, asking no one more.
    fn decide_with(&mut self, task: TaskId, force: bool) {
        let Some(a) = self.active.get(&task) else {
            return;
        };
        if a.results.len() < a.want && !force {
            return;
        }
        let Ok(kind) = kind_by_name(&a.input.kind) else {
            return;
        };
        let outs: Vec<&TaskOutput> = a.results.iter().map(|(_, r)| &r.output).collect();
        match judge(kind, &outs, a.quorum, a.budget) {
            Verdict::NeedMore(n) => {
                let budget = a.budget;
                if let Some(a) = self.active.get_mut(&task) {
                    a.want = (a.results.len() + n).min(budget);
                    if a.quorum < 2 {
                        a.quorum = 2; // a disagreement needs a real majority
                    }
                }
            }
            Verdict::Failed(reason) => self.finish_failed(task, reason),
            Verdict::Verified {
                answer,
                agreeing,
                disagreeing,
            } => {
                // A disagreement is settled by a margin of two: while the
                // majority leads by one and the budget allows, ask one more
                // worker. Only a margin of two may strike the minority.
                let margin = agreeing.len().saturating_sub(disagreeing.len());
                if !force
                    && !disagreeing.is_empty()
                    && margin < 2
                    && a.results.len() + a.assigned.len() < a.budget
                {
                    if let Some(a) = self.active.get_mut(&task) {
                        a.want = a.want.max(a.results.len() + 1);
                    }
                    return;
                }
                let Some(a) = self.active.remove(&task) else {
                    return;
                };
                for (p, _) in a.assigned.keys().map(|p| (*p, ())) {
                    if let Some(n) = self.inflight.get_mut(&p) {
                        *n = n.saturating_sub(1);
                    }
                }
                let output = a.results[answer].1.output.clone();
                let points = a.input.texts.len() as u32;
                // A minority is struck only when the majority has an established
                // worker in it: fresh identities (Sybils) agreeing with each
                // other cannot frame an honest worker.
                let established = agreeing.iter().any(|&i| {
                    self.standings.get(&a.results[i].1.worker).valid >= ESTABLISHED_AFTER
                });
                let mut by = Vec::new();
                for &i in &agreeing {
                    let (p, r) = &a.results[i];
                    // Only agreement with another worker counts toward a
                    // streak: a result accepted alone proves nothing.
                    if agreeing.len() >= 2 {
                        self.standings.valid(r.worker);
                        self.save_standing(&r.worker);
                    }
                    by.push(p.to_string());
                    let receipt = Receipt::issue(
                        &self.key,
                        task,
                        r.worker,
                        r.output_digest,
                        points,
                        unix_now(),
                    );
                    self.send(*p, Msg::Receipt(receipt), None);
                }
                let mut rejected = Vec::new();
                for &i in &disagreeing {
                    let (p, r) = &a.results[i];
                    self.stats.disagreements.fetch_add(1, Ordering::Relaxed);
                    // Any minority result ends a streak, struck or not.
                    self.standings.doubt(r.worker);
                    if established
                        && margin >= 2
                        && self.standings.invalid(r.worker, &self.cfg.policy)
                    {
                        tracing::warn!(peer = %p, "worker excluded: its results disagreed with the majority");
                    }
                    self.save_standing(&r.worker);
                    rejected.push(p.to_string());
                }
                let hexes = |v: &[usize]| {
                    v.iter()
                        .map(|&i| hex::encode(a.results[i].1.worker))
                        .collect::<Vec<_>>()
                };
                if let Some(s) = self.store.as_mut()
                    && let Err(e) =
                        s.finish(&task, &output, &hexes(&agreeing), &hexes(&disagreeing))
                {
                    tracing::error!("{e}");
                }
                self.tell(&task, a.parent, Stage::Verified { by, rejected });
                self.completed(task, a.parent, a.created);
            }
        }
    }

    fn completed(&mut self, task: TaskId, parent: Option<TaskId>, created: Instant) {
        let ms = created.elapsed().as_millis() as u64;
        match parent {
            None => {
                self.count_done(ms);
                self.tell(&task, None, Stage::Done);
            }
            Some(p) => {
                self.tell(&task, Some(p), Stage::Done);
                self.maybe_combine(p);
            }
        }
    }

    fn save_standing(&mut self, worker: &[u8; 32]) {
        let st = self.standings.get(worker);
        if let Some(s) = self.store.as_mut()
            && let Err(e) = s.save_standing(worker, &st)
        {
            tracing::error!("{e}");
        }
    }

    fn count_done(&self, ms: u64) {
        self.stats.done.fetch_add(1, Ordering::Relaxed);
        self.stats.latency_ms_sum.fetch_add(ms, Ordering::Relaxed);
        let b = LATENCY_BOUNDS_MS
            .iter()
            .position(|&u| ms <= u)
            .unwrap_or(LATENCY_BOUNDS_MS.len());
        self.stats.latency_buckets[b].fetch_add(1, Ordering::Relaxed);
    }

    fn maybe_combine(&mut self, parent: TaskId) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        let (Ok(Some(rec)), Ok(children)) = (store.get(&parent), store.children(&parent)) else {
            return;
        };
        if rec.state != TaskState::Pending || children.iter().any(|c| c.state != TaskState::Done) {
            return;
        }
        let parts: Vec<TaskOutput> = children.into_iter().filter_map(|c| c.output).collect();
        let result = kind_by_name(&rec.input.kind).and_then(|k| k.combine(&rec.input, parts));
        match result {
            Ok(out) => {
                let _ = store.finish(&parent, &out, &[], &[]);
                let ms = ((unix_now() as f64 - rec.created).max(0.0) * 1000.0) as u64;
                self.count_done(ms);
                self.tell(&parent, None, Stage::Done);
            }
            Err(e) => self.finish_failed(parent, e.to_string()),
        }
    }

    fn finish_failed(&mut self, task: TaskId, reason: String) {
        let parent = self.active.remove(&task).and_then(|a| {
            for p in a.assigned.keys() {
                if let Some(n) = self.inflight.get_mut(p) {
                    *n = n.saturating_sub(1);
                }
            }
            a.parent
        });
        if let Some(s) = self.store.as_mut() {
            let _ = s.fail(&task, &reason);
            if let Some(p) = parent {
                let _ = s.fail(&p, &format!("subtask {} failed: {reason}", task_hex(&task)));
            }
        }
        if let Some(p) = parent {
            // Its siblings are no longer worth running.
            let siblings: Vec<TaskId> = self
                .active
                .iter()
                .filter(|(_, a)| a.parent == Some(p))
                .map(|(t, _)| *t)
                .collect();
            for t in siblings {
                if let Some(a) = self.active.remove(&t) {
                    for q in a.assigned.keys() {
                        if let Some(n) = self.inflight.get_mut(q) {
                            *n = n.saturating_sub(1);
                        }
                    }
                }
            }
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = parent {
            self.tell(
                &p,
                None,
                Stage::Failed {
                    reason: format!("subtask {} failed: {reason}", task_hex(&task)),
                },
            );
        }
        self.tell(&task, parent, Stage::Failed { reason });
    }

    async fn on_cmd(&mut self, c: Cmd) {
        match c {
            Cmd::Submit {
                input,
                redundancy,
                reply,
            } => {
                let _ = reply.send(self.submit(input, redundancy));
                self.assign_pending();
            }
            Cmd::Status { reply } => {
                let listen = self
                    .client
                    .listeners()
                    .await
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let tasks = self
                    .store
                    .as_ref()
                    .and_then(|s| s.counts().ok())
                    .unwrap_or((0, 0, 0));
                let _ = reply.send(NodeStatus {
                    peer_id: self.client.local_peer_id().to_string(),
                    node: hex::encode(self.key.verifying_key().to_bytes()),
                    listen,
                    peers: self.client.stats().peers.load(Ordering::Relaxed) as usize,
                    reachability: self.reachability.clone(),
                    capability: self.capability(),
                    rss_bytes: rss_bytes(),
                    model_loaded: self.models.loaded(),
                    tasks,
                    points: self.wallet.balance(),
                    simulation: self.cfg.worker.simulate_lying,
                });
            }
            Cmd::Peers { reply } => {
                let rows = self
                    .client
                    .peers()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        let st = key_of(&p.peer)
                            .map(|k| self.standings.get(&k))
                            .unwrap_or_default();
                        PeerRow {
                            peer: p.peer.to_string(),
                            addr: p.addr.to_string(),
                            agent: p.agent_version,
                            protocol: p.protocol_version,
                            rtt_ms: p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                            reputation: st.score(),
                            excluded: st.excluded,
                        }
                    })
                    .collect();
                let _ = reply.send(rows);
            }
            Cmd::Wallet { reply } => {
                let _ = reply.send(self.wallet.export());
            }
        }
    }

    fn submit(&mut self, input: TaskInput, redundancy: Redundancy) -> Result<TaskId, ComputeError> {
        let kind = kind_by_name(&input.kind).map_err(ComputeError::Task)?;
        let plan = kind.plan(&input).map_err(ComputeError::Task)?;
        let store = self
            .store
            .as_mut()
            .ok_or_else(|| ComputeError::Io("this node keeps no task store".into()))?;
        let mut rng = rand::rng();
        let id: TaskId = rng.random();
        let subtasks: Vec<(TaskId, TaskInput)> = match plan {
            Plan::Run => Vec::new(),
            Plan::FanOut(parts) => parts.into_iter().map(|p| (rng.random(), p)).collect(),
        };
        store.insert(&id, &input, redundancy, &subtasks)?;
        if subtasks.is_empty() {
            self.activate(id, input, redundancy, None);
        } else {
            for (sid, sin) in subtasks {
                self.activate(sid, sin, redundancy, Some(id));
            }
        }
        Ok(id)
    }

    async fn on_tick(&mut self) {
        // Artifacts: a serving node without the model fetches it from a provider.
        if self.cfg.serve && (self.fetching.is_some() || !self.models.has_minilm()) {
            self.fetch_model().await;
        }
        // Capability records follow the caps: withdrawn over them, renewed under.
        if self.cfg.serve && self.advertise_at.elapsed() > Duration::from_secs(5) {
            self.advertise_at = Instant::now();
            self.advertise().await;
        }
        if self.active.is_empty() {
            return;
        }
        // Deadlines.
        let timeout = self.cfg.assign_timeout;
        let expired: Vec<(TaskId, PeerId)> = self
            .active
            .iter()
            .flat_map(|(t, a)| {
                a.assigned
                    .iter()
                    .filter(|(_, x)| x.since.elapsed() > timeout)
                    .map(|(p, _)| (*t, *p))
            })
            .collect();
        for (t, p) in expired {
            tracing::info!(peer = %p, task = %task_hex(&t), "assignment timed out; reassigning");
            self.unassign(p, t, true);
        }
        // A task that outlives its deadline fails with a reason; it is never left pending.
        let deadline = self.cfg.task_deadline;
        let late: Vec<TaskId> = self
            .active
            .iter()
            .filter(|(_, a)| a.created.elapsed() > deadline)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            self.finish_failed(
                t,
                format!(
                    "no quorum of agreeing results within {} s",
                    deadline.as_secs()
                ),
            );
        }
        self.refresh_providers().await;
        self.assign_pending();
    }

    async fn refresh_providers(&mut self) {
        if let Some(rx) = self.provider_query.as_mut() {
            match rx.try_recv() {
                Ok(found) => {
                    let me = self.client.local_peer_id();
                    self.providers = found.into_iter().filter(|p| *p != me).collect();
                    self.providers_at = Some(Instant::now());
                    self.provider_query = None;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
                Err(oneshot::error::TryRecvError::Closed) => self.provider_query = None,
            }
        }
        if self
            .rtts_at
            .is_none_or(|t| t.elapsed() > Duration::from_secs(5))
        {
            self.rtts_at = Some(Instant::now());
            if let Ok(peers) = self.client.peers().await {
                self.rtts = peers
                    .into_iter()
                    .filter_map(|p| p.rtt.map(|r| (p.peer, r.as_secs_f64() * 1000.0)))
                    .collect();
            }
        }
        let stale = self.providers_at.is_none_or(|t| {
            t.elapsed() > Duration::from_secs(if self.providers.is_empty() { 1 } else { 10 })
        });
        if stale && self.provider_query.is_none() {
            let (tx, rx) = oneshot::channel();
            let client = self.client.clone();
            tokio::spawn(async move {
                let found = client
                    .get_providers(&kind_key("embed"))
                    .await
                    .unwrap_or_default();
                let _ = tx.send(found);
            });
            self.provider_query = Some(rx);
        }
    }

    fn score(&self, p: &PeerId, rtts: &HashMap<PeerId, f64>) -> f64 {
        let st = key_of(p)
            .map(|k| self.standings.get(&k))
            .unwrap_or_default();
        let load = self.inflight.get(p).copied().unwrap_or(0) as f64;
        let rtt = rtts.get(p).copied().unwrap_or(50.0);
        st.score() / (1.0 + load) / (1.0 + rtt / 100.0)
    }

    fn assign_pending(&mut self) {
        let candidates: Vec<PeerId> = self
            .providers
            .iter()
            .filter(|p| key_of(p).is_some_and(|k| !self.standings.get(&k).excluded))
            .copied()
            .collect();
        let ids: Vec<TaskId> = self.active.keys().copied().collect();
        let rtts = self.rtts.clone();
        let mut rng = rand::rng();
        let fresh = self
            .providers_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(15));
        for t in ids {
            let Some(a) = self.active.get(&t) else {
                continue;
            };
            let missing = a.want.saturating_sub(a.results.len() + a.assigned.len());
            if missing == 0 {
                continue;
            }
            if candidates.is_empty() {
                if !a.searching_told {
                    let parent = a.parent;
                    self.tell(&t, parent, Stage::Searching);
                    if let Some(a) = self.active.get_mut(&t) {
                        a.searching_told = true;
                    }
                }
                continue;
            }
            let per = self.cfg.per_worker;
            let unanswered: Vec<PeerId> = candidates
                .iter()
                .filter(|p| !a.assigned.contains_key(p) && !a.results.iter().any(|(q, _)| q == *p))
                .copied()
                .collect();
            // Every capable peer has answered and the quorum still needs more:
            // wait `starve_grace` for new workers to join, then fail with a reason.
            let starved = unanswered.is_empty() && a.assigned.is_empty() && fresh;
            let since = a.starved_since;
            if starved {
                let (have, want) = (a.results.len(), a.want);
                // Decide with the results there are (a 2-1 majority verifies, unstruck).
                self.decide_with(t, true);
                if !self.active.contains_key(&t) {
                    continue;
                }
                if since.is_some_and(|s| s.elapsed() > self.cfg.starve_grace) {
                    let reason = format!(
                        "not enough independent workers: {have} results, {} more needed, and no capable peer that has not answered joined within {} s",
                        want.saturating_sub(have),
                        self.cfg.starve_grace.as_secs()
                    );
                    self.finish_failed(t, reason);
                } else if since.is_none()
                    && let Some(a) = self.active.get_mut(&t)
                {
                    a.starved_since = Some(Instant::now());
                }
                continue;
            }
            let mut eligible: Vec<PeerId> = unanswered
                .into_iter()
                .filter(|p| self.inflight.get(p).copied().unwrap_or(0) < per)
                .collect();
            if eligible.is_empty() {
                continue;
            }
            // Replicas are drawn at random, weighted by score (standing, load,
            // round trip), so no one can arrange to be paired with itself;
            // peers that timed out on this task come last.
            let mut keyed: Vec<(bool, f64, PeerId)> = eligible
                .drain(..)
                .map(|p| {
                    let w = self.score(&p, &rtts).max(1e-9);
                    (a.tried.contains(&p), -rng.random::<f64>().ln() / w, p)
                })
                .collect();
            keyed.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
            eligible = keyed.into_iter().map(|(_, _, p)| p).collect();
            // Adaptive replication: the first worker's standing sets the replicas.
            let mut want = a.want;
            if a.redundancy == Redundancy::Adaptive
                && a.results.is_empty()
                && a.assigned.is_empty()
                && a.want == 1
                && let Some(k) = key_of(&eligible[0])
            {
                want = self.standings.replicas(
                    Redundancy::Adaptive,
                    &k,
                    &self.cfg.policy,
                    rng.random::<f64>(),
                );
            }
            let missing = want.saturating_sub(a.results.len() + a.assigned.len());
            let chosen: Vec<PeerId> = eligible.into_iter().take(missing).collect();
            let input = a.input.clone();
            let parent = a.parent;
            if let Some(a) = self.active.get_mut(&t) {
                a.starved_since = None;
                a.want = want;
                if want >= 2 && a.quorum < 2 {
                    a.quorum = 2;
                }
                for p in &chosen {
                    a.assigned.insert(
                        *p,
                        Assignment {
                            since: Instant::now(),
                            accepted: false,
                        },
                    );
                    a.tried.insert(*p);
                }
            }
            for p in &chosen {
                *self.inflight.entry(*p).or_default() += 1;
                self.send(
                    *p,
                    Msg::Assign {
                        task: t,
                        input: input.clone(),
                    },
                    Some(t),
                );
            }
            self.tell(
                &t,
                parent,
                Stage::Assigned {
                    to: chosen.iter().map(ToString::to_string).collect(),
                },
            );
        }
    }

    async fn fetch_model(&mut self) {
        let done = match self.fetching.as_mut() {
            None => {
                self.fetching = Some(artifacts::Fetch::new(self.cfg.models_dir.clone(), &MINILM));
                false
            }
            Some(f) => f.finished(),
        };
        if done {
            self.fetching = None;
            self.advertised = false;
            self.advertise().await;
            return;
        }
        let Some(f) = self.fetching.as_mut() else {
            return;
        };
        if let Some(msg) = f.poll(&self.client) {
            let (peer, m) = msg;
            self.send(peer, m, None);
        }
    }
}
