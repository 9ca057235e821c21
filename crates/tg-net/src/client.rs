//! The application's handle on the network: cheap to clone, every call a
//! message to the event loop over a bounded channel.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{CHUNK_BYTES, Reply, Wire};
use crate::transfer::{SEND_WINDOW, chunks};
use crate::{NetError, NetStats};

/// Longest a frame keeps being retried while the receiver says it is busy.
/// Longer than a reservation that stopped paying its way can hold room
/// (`GRACE` + one chunk at `MIN_RATE`), plus a margin.
const BUSY_PATIENCE: Duration = Duration::from_secs(90);

pub(crate) enum Command {
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Request {
        peer: PeerId,
        wire: Wire,
        reply: oneshot::Sender<Result<Reply, NetError>>,
    },
    Publish {
        topic: String,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Subscribe {
        topic: String,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Disconnect {
        peer: PeerId,
    },
    AllowTransfers {
        peer: PeerId,
        allowed: bool,
    },
    Listeners {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
    },
    StartProviding {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    StopProviding {
        key: Vec<u8>,
    },
    Hold {
        peer: PeerId,
        for_: std::time::Duration,
    },
    GetProviders {
        key: Vec<u8>,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Bootstrap {
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Peers {
        reply: oneshot::Sender<Vec<crate::PeerInfo>>,
    },
}

/// Sends commands to the [`crate::EventLoop`].
#[derive(Clone)]
pub struct Client {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) local: PeerId,
    pub(crate) stats: Arc<NetStats>,
    pub(crate) transfer_ids: Arc<std::sync::atomic::AtomicU64>,
}

impl Client {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Traffic and rejection counters.
    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// A shared handle on the counters (for exporters).
    pub fn stats_handle(&self) -> Arc<NetStats> {
        self.stats.clone()
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Starts dialing `addr` (the result of the connection arrives as an event).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Remembers an address of `peer` (used by Kademlia and dialing by id).
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), NetError> {
        self.commands
            .send(Command::AddAddress { peer, addr })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Lets `peer` send chunked frames (larger than one chunk): call it once
    /// the peer is admitted; until then (and after it disconnects) it may
    /// send single frames only.
    pub async fn allow_transfers(&self, peer: PeerId, allowed: bool) -> Result<(), NetError> {
        self.commands
            .send(Command::AllowTransfers { peer, allowed })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Closes every connection to `peer`.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), NetError> {
        self.commands
            .send(Command::Disconnect { peer })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Addresses this node listens on.
    pub async fn listeners(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.call(|reply| Command::Listeners { reply }).await
    }

    /// Announces in the DHT that this node provides `key` (republished on the
    /// configured interval; expires at the other nodes after the provider TTL).
    pub async fn start_providing(&self, key: &[u8]) -> Result<(), NetError> {
        let key = key.to_vec();
        self.call(|reply| Command::StartProviding { key, reply })
            .await?
    }

    /// Stops announcing `key` (records elsewhere expire with their TTL).
    pub async fn stop_providing(&self, key: &[u8]) -> Result<(), NetError> {
        self.commands
            .send(Command::StopProviding { key: key.to_vec() })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Keeps every connection to `peer` open for `for_` (at most an hour),
    /// even without streams; then the idle timeout applies as usual. For a
    /// peer that will answer later over this connection, which may be the
    /// only way back to a node behind NAT. A hold opens no connection.
    pub async fn hold(&self, peer: PeerId, for_: std::time::Duration) -> Result<(), NetError> {
        self.commands
            .send(Command::Hold { peer, for_ })
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// The peers the DHT says provide `key` (this node included when it does).
    pub async fn get_providers(&self, key: &[u8]) -> Result<Vec<PeerId>, NetError> {
        let key = key.to_vec();
        self.call(|reply| Command::GetProviders { key, reply })
            .await
    }

    /// Joins the DHT: looks up this node's own id through the known peers.
    pub async fn bootstrap(&self) -> Result<(), NetError> {
        self.call(|reply| Command::Bootstrap { reply }).await?
    }

    /// The peers connected now, with what identify and ping told about them.
    pub async fn peers(&self) -> Result<Vec<crate::PeerInfo>, NetError> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// Subscribes to a gossipsub topic.
    pub async fn subscribe(&self, topic: &str) -> Result<(), NetError> {
        let topic = topic.to_owned();
        self.call(|reply| Command::Subscribe { topic, reply })
            .await?
    }

    /// Publishes a (gossipsub-signed) announcement.
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), NetError> {
        let topic = topic.to_owned();
        self.call(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    async fn request(&self, peer: PeerId, wire: Wire) -> Result<(), NetError> {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(20);
        loop {
            let reply = self
                .call(|reply| Command::Request {
                    peer,
                    wire: wire.clone(),
                    reply,
                })
                .await??;
            match reply {
                Reply::Accepted => return Ok(()),
                Reply::Rejected(why) => return Err(NetError::Rejected(why)),
                Reply::Busy if started.elapsed() < BUSY_PATIENCE => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Reply::Busy => return Err(NetError::Busy(peer)),
            }
        }
    }

    /// Delivers one application frame to `peer`, in chunks if it is large.
    /// Returns once the receiver has taken every byte.
    pub async fn send(&self, peer: PeerId, frame: Vec<u8>) -> Result<(), NetError> {
        use std::sync::atomic::Ordering;
        let len = frame.len() as u64;
        self.stats.bytes_out.fetch_add(len, Ordering::Relaxed);
        if frame.len() <= CHUNK_BYTES {
            return self.request(peer, Wire::Frame(frame)).await;
        }
        let transfer = self.transfer_ids.fetch_add(1, Ordering::Relaxed);
        let pieces: Vec<_> = chunks(&frame)
            .map(|(index, data)| Wire::Chunk {
                transfer,
                total: len,
                index,
                data: data.to_vec(),
            })
            .collect();
        drop(frame);
        // The first chunk alone opens the transfer at the receiver; the rest
        // follow in a window that ramps up (1, 1, 2, then SEND_WINDOW in
        // flight), so the receiver's count of what arrived never lags far
        // behind what was sent, even in the first seconds. A later chunk of
        // a transfer the receiver no longer holds is refused, so a dropped
        // transfer is an error here.
        let mut pieces = pieces.into_iter();
        for _ in 0..2 {
            if let Some(piece) = pieces.next() {
                self.request(peer, piece).await?;
            }
        }
        let pair: Vec<_> = pieces.by_ref().take(2).collect();
        futures::future::try_join_all(pair.into_iter().map(|w| self.request(peer, w))).await?;
        let mut results = futures::stream::iter(pieces.map(|w| self.request(peer, w)))
            .buffer_unordered(SEND_WINDOW);
        while let Some(r) = results.next().await {
            r?;
        }
        Ok(())
    }

    /// Sends bytes verbatim on the frame protocol — length prefix included —
    /// as a broken or hostile peer would (fault-injection builds only).
    #[cfg(feature = "fault-injection")]
    pub async fn send_raw(&self, peer: PeerId, bytes: Vec<u8>) -> Result<(), NetError> {
        let mut marked = crate::RAW_MARKER.to_vec();
        marked.extend(bytes);
        let reply = self
            .call(|reply| Command::Request {
                peer,
                wire: Wire::Frame(marked),
                reply,
            })
            .await??;
        match reply {
            Reply::Accepted => Ok(()),
            Reply::Rejected(why) => Err(NetError::Rejected(why)),
            Reply::Busy => Err(NetError::Busy(peer)),
        }
    }
}
