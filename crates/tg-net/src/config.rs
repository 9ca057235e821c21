//! Network settings of a node.

use std::time::Duration;

use libp2p::Multiaddr;

/// What a node is, as told to peers by identify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs jobs; agents connect to it.
    Coordinator,
    /// Trains on local data for a coordinator.
    Agent,
    /// A compute-network node: a Kademlia server that stores and serves
    /// provider records, since the compute network has no coordinator.
    Compute,
}

impl Role {
    /// The identify `agent_version` of this role.
    pub fn agent_version(self) -> String {
        let role = match self {
            Self::Coordinator => "coordinator",
            Self::Agent => "agent",
            Self::Compute => "compute",
        };
        format!("tensorguard-{role}/{}", env!("CARGO_PKG_VERSION"))
    }

    /// Parses an identify `agent_version` back into a role.
    pub fn from_agent_version(v: &str) -> Option<Self> {
        if v.starts_with("tensorguard-coordinator/") {
            Some(Self::Coordinator)
        } else if v.starts_with("tensorguard-agent/") {
            Some(Self::Agent)
        } else if v.starts_with("tensorguard-compute/") {
            Some(Self::Compute)
        } else {
            None
        }
    }
}

/// Settings of a node's swarm. Every limit is explicit.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's role.
    pub role: Role,
    /// Addresses to listen on (`/ip4/0.0.0.0/tcp/0`, `/ip4/…/udp/…/quic-v1`).
    pub listen: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Relays to listen through when this node is not reachable directly.
    pub relays: Vec<Multiaddr>,
    /// A network on one LAN (or loopback): AutoNAT probes and dials back
    /// private addresses too, so reachability is known there. Off, only
    /// global addresses count, as on the internet.
    pub lan: bool,
    /// Largest application frame accepted, after reassembly.
    pub max_frame_bytes: u64,
    /// Time for one request (one frame or chunk) to be answered.
    pub request_timeout: Duration,
    /// Connections without traffic are closed after this long.
    pub idle_timeout: Duration,
    /// Established connections in total.
    pub max_connections: u32,
    /// Connections being set up at once.
    pub max_pending: u32,
    /// Capacity of the command and event channels.
    pub channel_capacity: usize,
    /// How long a provider record lives in the DHT unless it is republished.
    pub provider_ttl: Duration,
    /// How often this node republishes its provider records.
    pub provider_republish: Duration,
    /// Providers a node stores per DHT key.
    pub max_providers_per_key: usize,
    /// Speak gossipsub (announcements). Off for the compute role, which
    /// announces nothing: gossipsub keeps every connection open.
    pub gossip: bool,
}

impl Config {
    /// Defaults for a role, listening on `listen`.
    pub fn new(role: Role, listen: Vec<Multiaddr>) -> Self {
        Self {
            role,
            listen,
            mdns: false,
            relays: Vec::new(),
            lan: false,
            max_frame_bytes: 4 << 30,
            request_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
            max_pending: 128,
            channel_capacity: 256,
            provider_ttl: Duration::from_secs(48 * 3600),
            provider_republish: Duration::from_secs(12 * 3600),
            max_providers_per_key: 20,
            gossip: !matches!(role, Role::Compute),
        }
    }
}
