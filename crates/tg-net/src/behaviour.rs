//! The composed libp2p behaviour of a TensorGuard node.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, autonat, connection_limits, dcutr, gossipsub, identify, identity, kad, mdns,
    ping, relay, request_response,
};

use crate::NetError;
use crate::codec::{FrameCodec, PROTOCOL};
use crate::config::Config;

/// Every protocol a node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) gossipsub: Toggle<gossipsub::Behaviour>,
    pub(crate) frames: request_response::Behaviour<FrameCodec>,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) relay: relay::client::Behaviour,
    pub(crate) dcutr: dcutr::Behaviour,
    /// Last on purpose: the derived behaviour builds the handlers in field
    /// order and stops at the first that denies a connection, and `hold`
    /// records every connection it builds a handler for (forgotten when the
    /// connection closes, which a denied one never reports).
    pub(crate) hold: crate::hold::Behaviour,
}

impl Behaviour {
    pub(crate) fn new(
        key: &identity::Keypair,
        relay: relay::client::Behaviour,
        config: &Config,
        stats: std::sync::Arc<crate::NetStats>,
    ) -> Result<Self, NetError> {
        let peer = key.public().to_peer_id();
        let limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(config.max_connections))
            .with_max_pending_incoming(Some(config.max_pending))
            .with_max_pending_outgoing(Some(config.max_pending))
            .with_max_established_per_peer(Some(4));
        let identify = identify::Behaviour::new(
            identify::Config::new("/tensorguard/1".into(), key.public())
                .with_agent_version(config.role.agent_version()),
        );
        let mut kad_config = kad::Config::new(StreamProtocol::new("/tensorguard/kad/1"));
        kad_config.set_query_timeout(std::time::Duration::from_secs(30));
        // A star around the coordinator has nothing to bootstrap from at start;
        // peers are added as they connect (identify), not by periodic walks.
        kad_config.set_periodic_bootstrap_interval(None);
        kad_config.set_provider_record_ttl(Some(config.provider_ttl));
        kad_config.set_provider_publication_interval(Some(config.provider_republish));
        // A compute network has many providers per key (every node that runs a
        // kind); libp2p's default keeps 20, which would hide all but 20 workers.
        let store_config = kad::store::MemoryStoreConfig {
            max_providers_per_key: config.max_providers_per_key,
            ..Default::default()
        };
        let mut kad = kad::Behaviour::with_config(
            peer,
            kad::store::MemoryStore::with_config(peer, store_config),
            kad_config,
        );
        kad.set_mode(Some(match config.role {
            crate::Role::Coordinator | crate::Role::Compute => kad::Mode::Server,
            crate::Role::Agent => kad::Mode::Client,
        }));
        let mdns = if config.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), peer)
                    .map_err(|e| NetError::Setup(format!("mDNS: {e}")))?,
            )
        } else {
            None
        };
        // Gossipsub holds a long-lived stream on every connection, so a
        // connection carrying it never goes idle; a role that announces
        // nothing leaves it off and its idle connections close.
        let gossipsub = if config.gossip {
            Some(gossipsub_behaviour(key)?)
        } else {
            None
        };
        let frames = request_response::Behaviour::with_codec(
            FrameCodec { stats },
            [(PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(256),
        );
        Ok(Self {
            limits: connection_limits::Behaviour::new(limits),
            identify,
            ping: ping::Behaviour::new(ping::Config::new()),
            kad,
            mdns: mdns.into(),
            gossipsub: gossipsub.into(),
            frames,
            autonat: autonat::Behaviour::new(
                peer,
                autonat::Config {
                    only_global_ips: !config.lan,
                    // On a LAN peers answer at once: probe soon after start,
                    // and soon again when a probe found no peer to answer it.
                    boot_delay: if config.lan {
                        std::time::Duration::from_secs(5)
                    } else {
                        autonat::Config::default().boot_delay
                    },
                    retry_interval: if config.lan {
                        std::time::Duration::from_secs(10)
                    } else {
                        autonat::Config::default().retry_interval
                    },
                    ..Default::default()
                },
            ),
            relay,
            dcutr: dcutr::Behaviour::new(peer),
            hold: crate::hold::Behaviour::default(),
        })
    }
}

/// Gossipsub for low-rate announcements: strict validation, signed messages.
fn gossipsub_behaviour(key: &identity::Keypair) -> Result<gossipsub::Behaviour, NetError> {
    let gossip_config = gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .heartbeat_interval(std::time::Duration::from_secs(1))
        .max_transmit_size(64 * 1024)
        .build()
        .map_err(|e| NetError::Setup(format!("gossipsub: {e}")))?;
    gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(key.clone()),
        gossip_config,
    )
    .map_err(|e| NetError::Setup(format!("gossipsub: {e}")))
}
