//! The network of a TensorGuard federation, and the only crate that uses
//! libp2p.
//!
//! Design decision: the application sees a [`Client`] (cheap to clone; every
//! call is a message over a bounded channel) and a bounded stream of
//! [`Event`]s; the swarm lives in an [`EventLoop`] task that never waits on
//! the application (the split rust-libp2p's file-sharing example uses). The
//! network moves opaque frames: what they mean, who may send them and whether
//! their signatures hold is decided above, in the coordinator and the agent.
//!
//! Protocols: TCP and QUIC; Noise and Yamux over TCP; identify, ping,
//! Kademlia, mDNS (optional), gossipsub for announcements, a request-response
//! frame protocol with a length-limited codec and chunked transfer of large
//! frames, AutoNAT, the relay client and DCUtR for nodes behind NAT, and
//! connection limits.

mod behaviour;
mod client;
mod codec;
mod config;
mod event_loop;
mod hold;
mod transfer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use client::Client;
pub use codec::{CHUNK_BYTES, MAX_WIRE_BYTES, PROTOCOL, Reply, Wire, decode_request};
pub use config::{Config, Role};
pub use event_loop::EventLoop;
pub use libp2p::{Multiaddr, PeerId, multiaddr};
pub use transfer::{ChunkError, Reassembly};

/// Prefix that marks a fault-injection frame to be written verbatim.
#[cfg(feature = "fault-injection")]
pub(crate) const RAW_MARKER: &[u8] = b"\x00tg-fault-injection-raw\x00";

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The swarm could not be built (bad key, transport or behaviour setup).
    #[error("network setup failed: {0}")]
    Setup(String),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// Address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A dial could not start.
    #[error("cannot dial {0}")]
    Dial(String),
    /// A frame could not be delivered.
    #[error("frame to {peer} not delivered: {reason}")]
    Delivery {
        /// Receiver.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The receiver refused the frame.
    #[error("frame refused by the receiver: {0}")]
    Rejected(String),
    /// The receiver stayed busy for too long.
    #[error("{0} stayed busy; frame not delivered")]
    Busy(PeerId),
    /// Publishing or subscribing failed.
    #[error("gossipsub: {0}")]
    Publish(String),
    /// The event loop has stopped.
    #[error("the network event loop has stopped")]
    Stopped,
    /// A DHT operation could not start (no known peers, store full).
    #[error("DHT: {0}")]
    Dht(String),
}

/// A connected peer, as identify and ping describe it.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Peer.
    pub peer: PeerId,
    /// Address of the connection.
    pub addr: Multiaddr,
    /// Its identify agent version (role and version), once identified.
    pub agent_version: Option<String>,
    /// Its identify protocol version, once identified.
    pub protocol_version: Option<String>,
    /// Last ping round trip.
    pub rtt: Option<std::time::Duration>,
}

/// What was wrong with bytes a peer sent on the frame protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WireFault {
    /// Announced or assembled length above the limit.
    Oversized,
    /// The stream ended before the announced length.
    Truncated,
    /// Bytes that do not decode.
    Malformed,
    /// Any other I/O failure while reading.
    Io,
    /// A chunked frame from a peer that has not been admitted.
    Unadmitted,
}

impl WireFault {
    pub(crate) fn classify(e: &std::io::Error) -> Self {
        let text = e.to_string();
        if text.contains("oversized") {
            Self::Oversized
        } else if e.kind() == std::io::ErrorKind::UnexpectedEof || text.contains("truncated") {
            Self::Truncated
        } else if e.kind() == std::io::ErrorKind::InvalidData {
            Self::Malformed
        } else {
            Self::Io
        }
    }

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Oversized => "oversized_frame",
            Self::Truncated => "truncated_frame",
            Self::Malformed => "malformed_frame",
            Self::Io => "io_error",
            Self::Unadmitted => "unadmitted_transfer",
        }
    }
}

/// Counters kept by the network layer (read by the metrics exporters).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Application bytes received in whole frames.
    pub bytes_in: AtomicU64,
    /// Application bytes sent.
    pub bytes_out: AtomicU64,
    /// Peers with at least one connection.
    pub peers: AtomicU64,
    /// Events dropped because the application's queue was full.
    pub events_dropped: AtomicU64,
    /// Oversized frames refused.
    pub oversized: AtomicU64,
    /// Truncated frames refused.
    pub truncated: AtomicU64,
    /// Undecodable frames refused.
    pub malformed: AtomicU64,
}

impl NetStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> tg_metrics::NetSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        tg_metrics::NetSnapshot {
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            peers: get(&self.peers),
            oversized: get(&self.oversized),
            truncated: get(&self.truncated),
            malformed: get(&self.malformed),
        }
    }

    pub(crate) fn count_fault(&self, fault: WireFault) {
        let c = match fault {
            WireFault::Oversized => &self.oversized,
            WireFault::Truncated => &self.truncated,
            WireFault::Malformed | WireFault::Io | WireFault::Unadmitted => &self.malformed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Something that happened on the network.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Listening on a new address.
    Listening(Multiaddr),
    /// First connection to a peer established.
    Connected {
        /// Peer (authenticated by Noise or TLS).
        peer: PeerId,
        /// Its address.
        addr: Multiaddr,
    },
    /// Last connection to a peer closed.
    Disconnected {
        /// Peer.
        peer: PeerId,
    },
    /// An outgoing connection failed.
    DialFailed {
        /// Peer, if known.
        peer: Option<PeerId>,
        /// Why.
        error: String,
    },
    /// A peer told us what it is.
    Identified {
        /// Peer.
        peer: PeerId,
        /// Its identify agent version (its [`Role`]).
        agent_version: String,
        /// Addresses it listens on.
        listen_addrs: Vec<Multiaddr>,
    },
    /// mDNS found a peer on the local network.
    Discovered {
        /// Peer.
        peer: PeerId,
        /// Address.
        addr: Multiaddr,
    },
    /// A whole application frame arrived.
    Frame {
        /// Sender (authenticated by the connection).
        peer: PeerId,
        /// The frame.
        frame: Vec<u8>,
    },
    /// A gossipsub announcement arrived (its signature already checked).
    Announcement {
        /// Author.
        source: Option<PeerId>,
        /// Topic.
        topic: String,
        /// Payload.
        data: Vec<u8>,
    },
    /// Bytes from a peer were refused before reaching the application.
    Rejected {
        /// Peer.
        peer: PeerId,
        /// What was wrong.
        fault: WireFault,
        /// Details for the log.
        detail: String,
    },
    /// AutoNAT's view of our reachability changed.
    NatStatus(String),
}

/// Turns an Ed25519 secret key into a libp2p identity (the bytes are zeroized).
pub fn keypair_from_ed25519(mut secret: [u8; 32]) -> Result<libp2p::identity::Keypair, NetError> {
    libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
        .map_err(|e| NetError::Setup(format!("identity key: {e}")))
}

/// The peer id of an Ed25519 public key.
pub fn peer_id_of(public: &[u8; 32]) -> Result<PeerId, NetError> {
    let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(public)
        .map_err(|e| NetError::Setup(format!("public key: {e}")))?;
    Ok(libp2p::identity::PublicKey::from(key).to_peer_id())
}

/// The Ed25519 public key inside a peer id, if it holds one — what binds the
/// connection's authenticated identity to application-level signatures.
pub fn ed25519_key_of(peer: &PeerId) -> Option<[u8; 32]> {
    let multihash = peer.as_ref();
    if multihash.code() != 0 {
        return None; // not an identity multihash: the key is not inlined
    }
    let key = libp2p::identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    Some(key.try_into_ed25519().ok()?.to_bytes())
}

/// Builds a node: its client, its event stream and the loop to spawn.
pub fn new(
    secret: [u8; 32],
    config: Config,
) -> Result<(Client, tokio::sync::mpsc::Receiver<Event>, EventLoop), NetError> {
    use libp2p::{noise, tcp, yamux};
    let keypair = keypair_from_ed25519(secret)?;
    let local = keypair.public().to_peer_id();
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    let behaviour_config = config.clone();
    let stats = Arc::new(NetStats::default());
    let codec_stats = stats.clone();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|key, relay| {
            behaviour::Behaviour::new(key, relay, &behaviour_config, codec_stats.clone())
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    let (command_tx, command_rx) = tokio::sync::mpsc::channel(config.channel_capacity);
    let (event_tx, event_rx) = tokio::sync::mpsc::channel(config.channel_capacity);
    let client = Client {
        commands: command_tx,
        local,
        stats: stats.clone(),
        transfer_ids: Arc::new(AtomicU64::new(1)),
    };
    let event_loop = EventLoop {
        swarm,
        commands: command_rx,
        events: event_tx,
        pending: Default::default(),
        reassembly: transfer::Reassembly::new(config.max_frame_bytes, config.request_timeout * 2),
        stats,
        relays: config.relays,
        provider_queries: Default::default(),
        peer_info: Default::default(),
    };
    Ok((client, event_rx, event_loop))
}
