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
use crate::{
    COMPUTE_PROTOCOL, Capability, ComputeError, Msg, Receipt, SignedResult, TaskId, artifacts,
    task_hex,
};

mod assign;
mod handle;
mod probe;
mod submitter;
mod types;
mod util;
mod worker_side;

use handle::Cmd;
pub use handle::Handle;
pub use types::{
    LATENCY_BOUNDS_MS, NodeConfig, NodeStats, NodeStatus, OVERHEAD_SAMPLES, PeerRow, Progress,
    Stage,
};
use util::{key_of, lock_file, reachability, unix_now};

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

/// A joining node announces its provider records again this long after
/// the previous announcement (then libp2p republishes them every 200 s):
/// the first goes out while the routing table holds little more than the
/// bootstrap peer, so it may reach none of the nodes closest to the key,
/// and lookups would not find this node until the republish.
const ANNOUNCE_AGAIN: [Duration; 2] = [Duration::from_secs(10), Duration::from_secs(60)];

/// DHT key under which nodes holding a model's artifacts provide.
pub fn model_key(id: &tg_tasks::ArtifactId) -> Vec<u8> {
    format!("/tensorguard/compute/model/{id}").into_bytes()
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
        /// A probe or an assignment: the peer as a worker is unreachable.
        to_worker: bool,
    },
}

struct Node {
    key: SigningKey,
    client: tg_net::Client,
    cfg: NodeConfig,
    models: Arc<Models>,
    store: Option<TaskStore>,
    /// Held for the node's life: one node per task store, and per wallet.
    _locks: (Option<std::fs::File>, std::fs::File),
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
    /// What AutoNAT last said: public, private or unknown.
    nat: &'static str,
    /// A relay holds a reservation for this node (it listens on a circuit).
    relayed: bool,
    /// When this node last announced its provider records, and how many
    /// times since it began serving (see [`ANNOUNCE_AGAIN`]).
    announced: Option<(Instant, usize)>,
    advertise_at: Instant,
    verified_model: bool,
    serving: Arc<std::sync::Mutex<HashSet<PeerId>>>,
    sent: HashMap<(TaskId, PeerId), ([u8; 32], u32)>,
    sent_order: std::collections::VecDeque<(TaskId, PeerId)>,
    rtts: HashMap<PeerId, f64>,
    rtts_at: Option<Instant>,
    /// What each sampled provider said when probed (submitter side).
    caps: HashMap<PeerId, probe::PeerCap>,
    /// Tasks queued here, by the submitter that sent them (worker side).
    queued_by: HashMap<PeerId, u32>,
    fetching: Option<artifacts::Fetch>,
    /// The model cache's bound cannot hold the model: no fetch is tried.
    cache_refused: bool,
    /// When the model's use was last recorded for LRU eviction.
    touched_at: Option<Instant>,
}

/// How often a node with tasks in flight or a fetch under way checks deadlines and assigns.
const BUSY_TICK: Duration = Duration::from_millis(100);
/// How often an idle node wakes (caps, capability records, a missing model).
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Starts a node. `secret` is its Ed25519 secret (the libp2p identity and the signing key).
pub async fn start(
    secret: [u8; 32],
    cfg: NodeConfig,
) -> Result<(Handle, tokio::task::JoinHandle<()>), ComputeError> {
    let key = SigningKey::from_bytes(&secret);
    // Before the network starts: a second node on the same store would
    // share its peer id and resume the same tasks.
    let store_lock = cfg
        .store
        .as_deref()
        .map(|p| lock_file(&p.with_extension("lock")))
        .transpose()?;
    // And one node per wallet, which is one identity per data directory.
    let wallet_lock = lock_file(&cfg.wallet_dir.join("node.lock"))?;
    let mut net = tg_net::Config::new(tg_net::Role::Compute, cfg.listen.clone());
    net.mdns = cfg.mdns;
    net.lan = cfg.lan;
    net.relays.clone_from(&cfg.relays);
    net.provider_ttl = cfg.provider_ttl;
    net.provider_republish = cfg.provider_ttl / 3;
    net.max_providers_per_key = 4096;
    net.request_timeout = Duration::from_secs(30);
    // Connections that carry a task are held open until its result can
    // come back (see `send`); the rest close soon after their last stream.
    net.idle_timeout = cfg.idle_timeout;
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
        _locks: (store_lock, wallet_lock),
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
        nat: "unknown",
        relayed: false,
        announced: None,
        advertise_at: Instant::now(),
        verified_model: false,
        serving: Default::default(),
        sent: HashMap::new(),
        sent_order: Default::default(),
        rtts: HashMap::new(),
        rtts_at: None,
        caps: HashMap::new(),
        queued_by: HashMap::new(),
        fetching: None,
        cache_refused: false,
        touched_at: None,
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

/// Public when AutoNAT says so; else relayed when a relay holds a
/// reservation for this node; else what AutoNAT said (private, unknown).
impl Node {
    fn tell(&self, task: &TaskId, parent: Option<TaskId>, stage: Stage) {
        let _ = self.progress.send(Progress {
            task: task_hex(task),
            parent: parent.map(|p| task_hex(&p)),
            stage,
        });
    }

    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        mut cmds: mpsc::Receiver<Cmd>,
        mut done: mpsc::Receiver<Done>,
        mut internal: mpsc::Receiver<Internal>,
    ) {
        // Busy (tasks in flight, a model being fetched): every 100 ms, for
        // deadlines and assignment; idle: once a second, so an idle node
        // barely wakes.
        let tick = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(tick);
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
                () = &mut tick => {
                    self.on_tick().await;
                    let busy = !self.active.is_empty() || self.fetching.is_some();
                    let period = if busy { BUSY_TICK } else { IDLE_TICK };
                    tick.as_mut().reset(tokio::time::Instant::now() + period);
                }
            }
            // Work arrived while idle: back to the busy pace at once.
            let soon = tokio::time::Instant::now() + BUSY_TICK;
            if (!self.active.is_empty() || self.fetching.is_some()) && tick.deadline() > soon {
                tick.as_mut().reset(soon);
            }
        }
    }

    fn send(&self, peer: PeerId, msg: Msg, task: Option<TaskId>) {
        let client = self.client.clone();
        let internal = self.internal.clone();
        let bytes = msg.encode();
        let to_worker = matches!(msg, Msg::Probe | Msg::Assign { .. });
        let hold = match msg {
            Msg::Assign { .. } | Msg::Accepted { .. } => Some(self.hold_for_result()),
            Msg::Result(_) => Some(self.hold_for_receipt()),
            _ => None,
        };
        let stats = self.stats.clone();
        stats.sending.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Some(d) = hold {
                let _ = client.hold(peer, d).await;
            }
            if let Err(e) = client.send(peer, bytes).await {
                let _ = internal.try_send(Internal::SendFailed {
                    peer,
                    task,
                    error: e.to_string(),
                    to_worker,
                });
            }
            stats.sending.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// How long both ends of an assignment hold its connection open: a
    /// task's result comes back over it (the only way back to a node behind
    /// NAT), and a submitter waits this long for a task a worker queued.
    /// From the accepted timeout alone, not the worker's own task timeout:
    /// a submitter stops waiting then whatever the worker was told.
    pub(super) fn hold_for_result(&self) -> Duration {
        self.cfg.accepted_timeout + Duration::from_secs(15)
    }

    /// How long both ends hold a connection a result went over: the
    /// receipt follows when the task reaches its quorum, which may wait for
    /// a tie-breaker or for new workers (the starve grace).
    pub(super) fn hold_for_receipt(&self) -> Duration {
        self.cfg.accepted_timeout + self.cfg.starve_grace + Duration::from_secs(15)
    }

    fn reachability_now(&self) -> String {
        reachability(self.nat, self.relayed).into()
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
                self.nat = if s.contains("Public") {
                    "public"
                } else if s.contains("Private") {
                    "private"
                } else {
                    "unknown"
                };
                self.reachability = self.reachability_now();
            }
            // A circuit address: a relay accepted our reservation.
            Event::Listening(addr)
                if addr
                    .iter()
                    .any(|p| matches!(p, tg_net::multiaddr::Protocol::P2pCircuit)) =>
            {
                self.relayed = true;
                self.reachability = self.reachability_now();
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

    fn on_msg(&mut self, peer: PeerId, m: Msg) {
        match m {
            Msg::Probe => {
                tracing::debug!(%peer, "probed");
                self.send(peer, Msg::Capability(self.capability()), None);
            }
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
                // Only a decline of an assignment it holds counts; a prompt
                // refusal is no strike (the task goes elsewhere, and this peer
                // is not asked for it again).
                // A decline after the worker said it queued the task (or
                // after the time to answer) is a timeout: no one can hold a
                // task for the accepted timeout and leave without a strike.
                let held = self
                    .active
                    .get(&task)
                    .and_then(|a| a.assigned.get(&peer))
                    .map(|x| x.accepted || x.since.elapsed() > self.cfg.assign_timeout);
                if let Some(late) = held {
                    // Logged only for a task the peer held, and cut short.
                    let why: String = reason.chars().take(200).collect();
                    tracing::info!(%peer, task = %task_hex(&task), "worker declined: {code} {why}");
                    if code == "E125" {
                        self.over_caps_said(peer);
                    }
                    self.unassign(peer, task, late);
                }
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
            Msg::ArtifactBusy { id } => {
                if let Some(f) = self.fetching.as_mut() {
                    f.on_busy(peer, id);
                }
            }
            Msg::Capability(c) => self.on_capability(peer, c),
        }
    }

    fn on_internal(&mut self, i: Internal) {
        match i {
            Internal::SendFailed {
                peer,
                task,
                error,
                to_worker,
            } => {
                tracing::debug!(%peer, "send failed: {error}");
                // Unreachable, not a staller: no strike, and no work until it
                // answers a probe again.
                if to_worker {
                    self.probe_failed(peer);
                }
                if let Some(t) = task {
                    self.unassign(peer, t, false);
                }
            }
        }
    }

    async fn on_tick(&mut self) {
        // Artifacts: a serving node without the model fetches it from a provider.
        if self.cfg.serve
            && !self.cache_refused
            && (self.fetching.is_some() || !self.models.has_minilm())
        {
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
        let (timeout, accepted) = (self.cfg.assign_timeout, self.cfg.accepted_timeout);
        let expired: Vec<(TaskId, PeerId)> = self
            .active
            .iter()
            .flat_map(|(t, a)| {
                a.assigned
                    .iter()
                    .filter(|(_, x)| {
                        x.since.elapsed() > if x.accepted { accepted } else { timeout }
                    })
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
}
