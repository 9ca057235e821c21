//! The event loop: owns the swarm, executes [`Command`]s, and turns swarm
//! events into [`Event`]s.
//!
//! Design decision: the loop never waits on the application. Frames are
//! handed over with `try_send`; when the application's queue is full the
//! sender is answered [`Reply::Busy`] and retries, so back-pressure reaches
//! the remote peer instead of stalling pings, identify and every other peer.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, InboundFailure, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, mdns, ping};

/// Why a publish or subscribe fails on a node without gossipsub.
const GOSSIP_OFF: &str = "this node's role does not speak gossipsub (Config::gossip is off)";
use tokio::sync::{mpsc, oneshot};

use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::client::Command;
use crate::codec::{Reply, Wire};
use crate::transfer::Reassembly;
use crate::{Event, NetError, NetStats, PeerInfo, WireFault};

/// A provider lookup in flight: what it found so far and who waits for it.
pub(crate) type ProviderQuery = (
    std::collections::HashSet<PeerId>,
    oneshot::Sender<Vec<PeerId>>,
);

/// Runs the swarm until every [`crate::Client`] is dropped.
pub struct EventLoop {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Reply, NetError>>>,
    pub(crate) reassembly: Reassembly,
    pub(crate) stats: Arc<NetStats>,
    pub(crate) relays: Vec<Multiaddr>,
    pub(crate) provider_queries: HashMap<kad::QueryId, ProviderQuery>,
    pub(crate) peer_info: HashMap<PeerId, PeerInfo>,
}

impl EventLoop {
    /// Drives the node. Returns when the last client handle is dropped.
    pub async fn run(mut self) {
        for relay in std::mem::take(&mut self.relays) {
            let circuit = relay.with(libp2p::multiaddr::Protocol::P2pCircuit);
            if let Err(e) = self.swarm.listen_on(circuit.clone()) {
                tracing::warn!(%circuit, "cannot listen through relay: {e}");
            }
        }
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return,
                },
                _ = sweep.tick() => {
                    // Busy time ends when the queue has room, even if no
                    // request has come to notice it.
                    if self.events.capacity() > 0 {
                        self.reassembly.receiver_ready();
                    }
                    self.reassembly.expire(None);
                }
            }
        }
    }

    fn emit(&self, event: Event) {
        if self.events.try_send(event).is_err() {
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Dial { addr, reply } => {
                let r = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NetError::Dial(format!("{addr}: {e}")));
                let _ = reply.send(r);
            }
            Command::Request { peer, wire, reply } => {
                let id = self.swarm.behaviour_mut().frames.send_request(&peer, wire);
                self.pending.insert(id, reply);
            }
            Command::Publish { topic, data, reply } => {
                let topic = gossipsub::IdentTopic::new(topic);
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .as_mut()
                    .ok_or_else(|| NetError::Publish(GOSSIP_OFF.into()))
                    .and_then(|g| {
                        g.publish(topic, data)
                            .map(|_| ())
                            .map_err(|e| NetError::Publish(e.to_string()))
                    });
                let _ = reply.send(r);
            }
            Command::Subscribe { topic, reply } => {
                let topic = gossipsub::IdentTopic::new(topic);
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .as_mut()
                    .ok_or_else(|| NetError::Publish(GOSSIP_OFF.into()))
                    .and_then(|g| {
                        g.subscribe(&topic)
                            .map(|_| ())
                            .map_err(|e| NetError::Publish(e.to_string()))
                    });
                let _ = reply.send(r);
            }
            Command::AllowTransfers { peer, allowed } => self.reassembly.allow(peer, allowed),
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Listeners { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::AddAddress { peer, addr } => {
                self.swarm.add_peer_address(peer, addr.clone());
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
            Command::StartProviding { key, reply } => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(kad::RecordKey::new(&key))
                    .map(|_| ())
                    .map_err(|e| NetError::Dht(e.to_string()));
                let _ = reply.send(r);
            }
            Command::StopProviding { key } => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&kad::RecordKey::new(&key));
            }
            Command::Hold { peer, for_ } => self.swarm.behaviour_mut().hold.hold(peer, for_),
            Command::GetProviders { key, reply } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(kad::RecordKey::new(&key));
                self.provider_queries
                    .insert(id, (Default::default(), reply));
            }
            Command::Bootstrap { reply } => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .bootstrap()
                    .map(|_| ())
                    .map_err(|e| NetError::Dht(e.to_string()));
                let _ = reply.send(r);
            }
            Command::Peers { reply } => {
                let _ = reply.send(self.peer_info.values().cloned().collect());
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => self.emit(Event::Listening(address)),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } if num_established.get() == 1 => {
                self.stats.peers.fetch_add(1, Ordering::Relaxed);
                self.peer_info.insert(
                    peer_id,
                    PeerInfo {
                        peer: peer_id,
                        addr: endpoint.get_remote_address().clone(),
                        agent_version: None,
                        protocol_version: None,
                        rtt: None,
                    },
                );
                self.emit(Event::Connected {
                    peer: peer_id,
                    addr: endpoint.get_remote_address().clone(),
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.stats.peers.fetch_sub(1, Ordering::Relaxed);
                self.peer_info.remove(&peer_id);
                self.reassembly.expire(Some(&peer_id));
                self.emit(Event::Disconnected { peer: peer_id });
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                self.emit(Event::DialFailed {
                    peer: peer_id,
                    error: error.to_string(),
                });
            }
            SwarmEvent::Behaviour(b) => self.on_behaviour_event(b),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Frames(e) => self.on_frames_event(e),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if let Some(p) = self.peer_info.get_mut(&peer_id) {
                    p.agent_version = Some(info.agent_version.clone());
                    p.protocol_version = Some(info.protocol_version.clone());
                }
                for addr in &info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                self.emit(Event::Identified {
                    peer: peer_id,
                    agent_version: info.agent_version,
                    listen_addrs: info.listen_addrs,
                });
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm.add_peer_address(peer, addr.clone());
                    self.emit(Event::Discovered { peer, addr });
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. }) => {
                self.emit(Event::Announcement {
                    source: message.source,
                    topic: message.topic.into_string(),
                    data: message.data,
                });
            }
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            }) => {
                if let Some(p) = self.peer_info.get_mut(&peer) {
                    p.rtt = Some(rtt);
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            }) => {
                self.on_kad_query(id, result, step.last);
            }
            BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { new, .. }) => {
                self.emit(Event::NatStatus(format!("{new:?}")));
            }
            _ => {}
        }
    }

    fn on_kad_query(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        let kad::QueryResult::GetProviders(r) = result else {
            return;
        };
        let done = match r {
            Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                if let Some((found, _)) = self.provider_queries.get_mut(&id) {
                    found.extend(providers);
                }
                last
            }
            Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) | Err(_) => true,
        };
        if (done || last)
            && let Some((found, reply)) = self.provider_queries.remove(&id)
        {
            let _ = reply.send(found.into_iter().collect());
        }
    }

    fn on_frames_event(&mut self, event: request_response::Event<Wire, Reply>) {
        use request_response::{Event as R, Message};
        match event {
            R::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let reply = self.on_request(peer, request);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .frames
                    .send_response(channel, reply);
            }
            R::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(tx) = self.pending.remove(&request_id) {
                    let _ = tx.send(Ok(response));
                }
            }
            R::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some(tx) = self.pending.remove(&request_id) {
                    let _ = tx.send(Err(NetError::Delivery {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            R::InboundFailure { peer, error, .. } => {
                let fault = match &error {
                    InboundFailure::Io(e) => Some(WireFault::classify(e)),
                    _ => None,
                };
                if let Some(fault) = fault {
                    self.stats.count_fault(fault);
                    self.emit(Event::Rejected {
                        peer,
                        fault,
                        detail: error.to_string(),
                    });
                }
            }
            R::ResponseSent { .. } => {}
        }
    }

    fn on_request(&mut self, peer: PeerId, request: Wire) -> Reply {
        // This loop is the channel's only sender, so a free slot seen here is
        // still free below: a completed transfer is never lost to a full queue.
        if self.events.capacity() == 0 {
            self.reassembly.receiver_busy();
            return Reply::Busy;
        }
        self.reassembly.receiver_ready();
        let frame = match request {
            Wire::Frame(frame) => frame,
            Wire::Chunk {
                transfer,
                total,
                index,
                data,
            } => match self.reassembly.accept(peer, transfer, total, index, data) {
                Ok(None) => return Reply::Accepted,
                Ok(Some(frame)) => frame,
                Err(e) => {
                    let fault = match e {
                        crate::transfer::ChunkError::OverBudget => return Reply::Busy,
                        // Nothing is buffered; "busy" lets a peer whose
                        // admission is still on its way in retry.
                        crate::transfer::ChunkError::NotAdmitted => {
                            self.stats.count_fault(WireFault::Unadmitted);
                            return Reply::Busy;
                        }
                        crate::transfer::ChunkError::TooLarge { .. } => WireFault::Oversized,
                        _ => WireFault::Malformed,
                    };
                    self.stats.count_fault(fault);
                    self.emit(Event::Rejected {
                        peer,
                        fault,
                        detail: e.to_string(),
                    });
                    return Reply::Rejected(e.to_string());
                }
            },
        };
        let len = frame.len() as u64;
        match self.events.try_send(Event::Frame { peer, frame }) {
            Ok(()) => {
                self.stats.bytes_in.fetch_add(len, Ordering::Relaxed);
                Reply::Accepted
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.reassembly.receiver_busy();
                Reply::Busy
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Reply::Rejected("node is shutting down".into())
            }
        }
    }
}
