//! The handle on a running node, and the node's side of its commands.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tg_net::PeerId;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Node, NodeStatus, PeerRow, Progress, key_of};
use crate::cap::rss_bytes;
use crate::policy::Redundancy;
use crate::{ComputeError, NodeStats, TaskId};
use tg_tasks::TaskInput;

pub(super) enum Cmd {
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
    pub(super) cmds: mpsc::Sender<Cmd>,
    pub(super) progress: broadcast::Sender<Progress>,
    /// Counters.
    pub stats: Arc<NodeStats>,
    /// Peer id.
    pub peer_id: PeerId,
}

impl Handle {
    /// Sends the command `make` builds around a reply channel, and waits
    /// for the node's reply.
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Cmd,
    ) -> Result<T, ComputeError> {
        let (reply, rx) = oneshot::channel();
        self.cmds
            .send(make(reply))
            .await
            .map_err(|_| ComputeError::Stopped)?;
        rx.await.map_err(|_| ComputeError::Stopped)
    }

    /// Stores and starts a task; returns its id.
    pub async fn submit(
        &self,
        input: TaskInput,
        redundancy: Redundancy,
    ) -> Result<TaskId, ComputeError> {
        self.call(|reply| Cmd::Submit {
            input,
            redundancy,
            reply,
        })
        .await?
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
        self.call(|reply| Cmd::Status { reply }).await
    }

    /// Connected peers with latency and reputation.
    pub async fn peers(&self) -> Result<Vec<PeerRow>, ComputeError> {
        self.call(|reply| Cmd::Peers { reply }).await
    }

    /// The wallet's export.
    pub async fn wallet(&self) -> Result<crate::WalletExport, ComputeError> {
        self.call(|reply| Cmd::Wallet { reply }).await
    }
}

impl Node {
    pub(super) async fn on_cmd(&mut self, c: Cmd) {
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
                let listeners = self.client.listeners().await.unwrap_or_default();
                // Relayed while a circuit listener is open now (a relay that
                // stops or refuses a renewal closes it).
                self.relayed = listeners.iter().any(|a| {
                    a.iter()
                        .any(|p| matches!(p, tg_net::multiaddr::Protocol::P2pCircuit))
                });
                self.reachability = self.reachability_now();
                let listen = listeners.iter().map(ToString::to_string).collect();
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
}
