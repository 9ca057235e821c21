//! The coordinator's side of the network: a [`Transport`] over libp2p.
//!
//! Design decision: everything the round logic must not think about happens
//! here — offering the job to peers that connect, admission (allow-list or a
//! one-time enrollment token), signing every frame sent and verifying every
//! frame received against the sender's connection identity, refusing replays
//! and frames of other jobs, and counting every refusal by reason. The round
//! logic sees only admitted agents and verified payloads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tg_net::{Event, PeerId};
use tg_proto::signed;
use tg_proto::{NonceCounter, Offer, ReplayGuard, ToAgent, ToCoordinator};
use tg_store::Store;
use tg_types::{AgentId, JobId};
use tokio::sync::mpsc;

pub use crate::admission::Admission;
use crate::admission::{AttestationGate, AuditSink};
use crate::{Frame, Incoming, Outgoing, Transport, TransportEvent};

// Admission of a join (identity, then attestation) — a child module so it
// sees the transport's private state.
#[path = "net_join.rs"]
mod join;
use tg_metrics::Metrics;

struct Member {
    agent: AgentId,
    key: [u8; 32],
    /// The fleet certificate the agent presented (passed on to its peers).
    certificate: Option<tg_proto::Certificate>,
    name: String,
    /// Frames queued for this agent, delivered in order by its own task, so
    /// one stalled agent never holds up a broadcast to the others.
    outbox: mpsc::Sender<Vec<u8>>,
}

/// Frames queued per agent before further sends count it as a dropout.
const OUTBOX_CAPACITY: usize = 8;

/// A [`Transport`] over a libp2p node.
pub struct NetTransport {
    client: tg_net::Client,
    events: mpsc::Receiver<Event>,
    key: SigningKey,
    nonces: NonceCounter,
    replay: ReplayGuard,
    offer: Offer,
    admission: Admission,
    store: Store,
    members: BTreeMap<PeerId, Member>,
    connected: HashSet<PeerId>,
    metrics: Arc<Metrics>,
    topic: String,
    undelivered_tx: mpsc::Sender<PeerId>,
    undelivered: mpsc::Receiver<PeerId>,
    /// Frames accepted by `send` and not yet delivered or failed.
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// The job's TEE requirement, if any.
    gate: Option<AttestationGate>,
    /// The attestation nonce sent to each peer with its offer.
    issued: HashMap<PeerId, [u8; 32]>,
    /// Attestation outcome of every admitted agent (agent id → record).
    attested: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
    audit: Option<Arc<dyn AuditSink>>,
    /// Live per-agent view for operators.
    fleet: crate::fleet_view::FleetView,
}

/// The gossipsub topic on which a job's rounds are announced.
pub fn announcement_topic(job: JobId) -> String {
    format!("tensorguard/job/{job}/rounds")
}

impl NetTransport {
    /// A transport for the job in `offer`. `store` is a connection of its own
    /// to the coordinator's store (for enrollment).
    pub fn new(
        client: tg_net::Client,
        events: mpsc::Receiver<Event>,
        key: SigningKey,
        offer: Offer,
        admission: Admission,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> Self {
        let stats = client.stats_handle();
        metrics.attach_network(move || stats.snapshot());
        let topic = announcement_topic(offer.job);
        let (undelivered_tx, undelivered) = mpsc::channel(256);
        Self {
            client,
            events,
            key,
            nonces: NonceCounter::from_clock(),
            replay: ReplayGuard::default(),
            offer,
            admission,
            store,
            members: BTreeMap::new(),
            connected: HashSet::new(),
            metrics,
            topic,
            undelivered_tx,
            undelivered,
            in_flight: Arc::default(),
            gate: None,
            issued: HashMap::new(),
            attested: Arc::default(),
            audit: None,
            fleet: Default::default(),
        }
    }

    /// Requires TEE attestation from every joining agent.
    pub fn with_attestation(mut self, gate: AttestationGate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Records admission decisions in `sink`.
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(sink);
        self
    }

    /// Reports agents into `fleet` (last seen, latency, bytes, attestation).
    pub fn with_fleet_view(mut self, fleet: crate::fleet_view::FleetView) -> Self {
        self.fleet = fleet;
        self
    }

    /// Attestation outcomes of admitted agents, by agent id, kept current
    /// while the transport runs (for round records).
    pub fn attestations(&self) -> Arc<Mutex<BTreeMap<String, serde_json::Value>>> {
        self.attested.clone()
    }

    fn record(&self, kind: &str, body: serde_json::Value) {
        if let Some(a) = &self.audit {
            a.record(kind, self.offer.job, body);
        }
    }

    /// A delivery task for one agent's frames.
    fn outbox_for(&self, peer: PeerId) -> mpsc::Sender<Vec<u8>> {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTBOX_CAPACITY);
        let client = self.client.clone();
        let failed = self.undelivered_tx.clone();
        let in_flight = self.in_flight.clone();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if let Err(e) = client.send(peer, frame).await {
                    tracing::debug!(%peer, "frame not delivered: {e}");
                    // Full means a dropout is already being reported.
                    let _ = failed.try_send(peer);
                }
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        });
        tx
    }

    /// Agents admitted and connected.
    pub fn member_count(&self) -> usize {
        self.members
            .keys()
            .filter(|p| self.connected.contains(p))
            .count()
    }

    /// Serves joins until `n` agents are admitted and connected, or `timeout`.
    pub async fn wait_for_agents(&mut self, n: usize, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.member_count() < n {
            match tokio::time::timeout_at(deadline, self.pump()).await {
                Ok(Some(_)) => {} // no round yet: nothing to do with frames or dropouts
                Ok(None) | Err(_) => break,
            }
        }
        self.member_count()
    }

    /// Signs and sends a session message (offer, welcome, refusal) in the
    /// background: a peer that never answers must not stall the coordinator.
    fn send_signed(&mut self, peer: PeerId, message: &ToAgent) {
        match signed::seal(&self.key, self.nonces.next(), message) {
            Ok(frame) => {
                let client = self.client.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.send(peer, frame).await {
                        tracing::debug!(%peer, "session message not delivered: {e}");
                    }
                });
            }
            Err(e) => tracing::error!("cannot sign a session message: {e}"),
        }
    }

    fn refuse(&mut self, peer: &PeerId, reason: &'static str, detail: &str) {
        self.metrics.rejected(reason);
        tracing::warn!(%peer, reason, "{detail}");
    }

    /// Handles one network event: `None` when the network has stopped,
    /// `Some(None)` when the event concerned only this layer (a join, a
    /// refusal), `Some(Some(e))` for the round logic.
    async fn pump(&mut self) -> Option<Option<TransportEvent>> {
        let event = tokio::select! {
            e = self.events.recv() => e?,
            Some(peer) = self.undelivered.recv() => {
                // Undeliverable: a dropout for the round in progress.
                return Some(self.members.get(&peer).map(|m| TransportEvent::Disconnected(m.agent.clone())));
            }
        };
        Some(match event {
            Event::Connected { peer, .. } => {
                self.connected.insert(peer);
                let mut offer = self.offer.clone();
                if self.gate.is_some() {
                    // A fresh nonce per connection: evidence from an earlier
                    // connection cannot be replayed.
                    let mut nonce = [0u8; 32];
                    if getrandom::fill(&mut nonce).is_err() {
                        tracing::error!("the OS RNG failed; not offering the job to {peer}");
                        return Some(None);
                    }
                    self.issued.insert(peer, nonce);
                    offer.attestation_nonce = Some(nonce);
                }
                let offer = ToAgent::Offer(offer);
                // A peer that cannot take the offer will not join either.
                self.send_signed(peer, &offer);
                self.metrics.set_members(self.member_count());
                None
            }
            Event::Disconnected { peer } => {
                self.connected.remove(&peer);
                // The nonce was for that connection only.
                self.issued.remove(&peer);
                self.metrics.set_members(self.member_count());
                self.fleet.disconnected(&peer.to_string());
                self.members.get(&peer).map(|m| {
                    tracing::info!(%peer, name = %m.name, "agent disconnected");
                    TransportEvent::Disconnected(m.agent.clone())
                })
            }
            Event::Frame { peer, frame } => self.on_frame(peer, frame).await,
            Event::Rejected {
                peer,
                fault,
                detail,
            } => {
                tracing::warn!(%peer, fault = fault.label(), "{detail}");
                None
            }
            _ => None,
        })
    }

    /// Verifies a frame; returns the payload for the round logic, if any.
    async fn on_frame(&mut self, peer: PeerId, frame: Vec<u8>) -> Option<TransportEvent> {
        let Some(key) = tg_net::ed25519_key_of(&peer) else {
            self.refuse(
                &peer,
                "no_identity_key",
                "peer id does not carry an Ed25519 key",
            );
            return None;
        };
        let bytes = frame.len() as u64;
        // Verified and decoded once; a training reply stays in `frame`.
        // Verified first (the payload stays in `frame`), then, before
        // anything is decoded: a peer that has not joined may send a join
        // and nothing else.
        let (header, payload) = match signed::open_payload(&frame, &key) {
            Ok(x) => x,
            Err(tg_proto::ProtoError::BadSignature | tg_proto::ProtoError::WrongSender) => {
                self.refuse(&peer, "bad_signature", "frame signature does not verify");
                return None;
            }
            Err(e) => {
                self.refuse(&peer, "undecodable", &e.to_string());
                return None;
            }
        };
        if !self.members.contains_key(&peer) && !signed::is_join(payload) {
            self.refuse(
                &peer,
                "unenrolled",
                "message from a peer that has not joined",
            );
            return None;
        }
        let opened = match signed::read_from_agent(&frame, &header, payload) {
            Ok(x) => x,
            Err(tg_proto::ProtoError::BindingMismatch) => {
                self.refuse(
                    &peer,
                    "binding_mismatch",
                    "signed header does not match the message",
                );
                return None;
            }
            Err(e) => {
                self.refuse(&peer, "undecodable", &e.to_string());
                return None;
            }
        };
        if header.binding.job != self.offer.job {
            self.refuse(&peer, "wrong_job", "frame for another job");
            return None;
        }
        if let Err(e) = self.replay.check(&header) {
            self.refuse(&peer, "replay", &e.to_string());
            return None;
        }
        let (message, range) = match opened {
            signed::FromAgent::Trained(range) => (None, range),
            signed::FromAgent::Message(m) => (Some(m), 0..0),
        };
        if let Some(ToCoordinator::Join(join)) = message {
            self.on_join(peer, key, join).await;
            return None;
        }
        let Some(member) = self.members.get(&peer) else {
            self.refuse(
                &peer,
                "unenrolled",
                "message from a peer that has not joined",
            );
            return None;
        };
        let from = member.agent.clone();
        self.fleet.heard(from.as_str(), frame.len());
        let message = match message {
            Some(m) => Incoming::Message(m),
            None => Incoming::Trained(Frame::within(frame, range)?),
        };
        Some(TransportEvent::Received {
            from,
            message,
            bytes,
        })
    }
}

impl Transport for NetTransport {
    fn connected(&self) -> Vec<AgentId> {
        self.members
            .iter()
            .filter(|(p, _)| self.connected.contains(p))
            .map(|(_, m)| m.agent.clone())
            .collect()
    }

    fn identity(&self, agent: &AgentId) -> Option<[u8; 32]> {
        self.members
            .values()
            .find(|m| &m.agent == agent)
            .map(|m| m.key)
    }

    fn certificate(&self, agent: &AgentId) -> Option<tg_proto::Certificate> {
        self.members
            .values()
            .find(|m| &m.agent == agent)
            .and_then(|m| m.certificate.clone())
    }

    fn packs(&self) -> bool {
        true
    }

    async fn send(&mut self, to: &AgentId, message: &Outgoing) -> Result<u64, String> {
        let peer: PeerId = to
            .as_str()
            .parse()
            .map_err(|_| format!("{to} is not a peer id"))?;
        let member = self
            .members
            .get(&peer)
            .ok_or_else(|| format!("{to} has not joined"))?;
        if !self.connected.contains(&peer) {
            return Err(format!("{to} is not connected"));
        }
        let nonce = self.nonces.next();
        let sealed = match message.packed() {
            Some(packed) => {
                signed::seal_packed(&self.key, nonce, message.binding(), packed.to_vec())
            }
            None => signed::seal_payload(
                &self.key,
                nonce,
                message.binding(),
                message.bytes().to_vec(),
            ),
        }
        .map_err(|e| e.to_string())?;
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.fleet.sent(to.as_str(), sealed.len());
        let bytes = sealed.len() as u64;
        member.outbox.try_send(sealed).map(|()| bytes).map_err(|_| {
            self.in_flight
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            format!("{to} is not keeping up (outbox full)")
        })
    }

    async fn flush(&mut self) {
        // Bounded: an agent that stopped answering does not keep us alive
        // past its request timeout.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.in_flight.load(std::sync::atomic::Ordering::Acquire) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn next_event(&mut self) -> Option<TransportEvent> {
        loop {
            if let Some(event) = self.pump().await? {
                return Some(event);
            }
        }
    }

    async fn announce(&mut self, round: u32, stage: tg_types::record::RoundStage) {
        let note = format!(
            "{{\"job\":\"{}\",\"round\":{round},\"stage\":\"{stage}\"}}",
            self.offer.job
        );
        // No subscribers yet is normal; announcements are informational.
        let _ = self.client.publish(&self.topic, note.into_bytes()).await;
    }
}
