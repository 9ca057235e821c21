//! The agent's side of the network: find the coordinator, join its job,
//! answer its rounds, reconnect when the connection drops.
//!
//! Design decision: the protocol work (verify, refuse replays, sign replies)
//! happens here on the async side; the [`Agent`] handler stays synchronous and
//! runs on a blocking thread, so training never stalls the network task. The
//! agent trusts the coordinator named by `/p2p/<peer id>` in its address;
//! without one, the first coordinator that offers a job (trust on first use,
//! as an SSH client does) — and only that one for the rest of the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tg_metrics::Metrics;
use tg_net::{Event, PeerId};
use tg_proto::signed::{self, Bound};
use tg_proto::{JoinRequest, NonceCounter, Offer, ReplayGuard, ToAgent, ToCoordinator};
use tg_types::privacy::DpMode;
use tg_types::{AgentId, JobId};
use tokio::sync::mpsc;

use crate::{Agent, AgentError, Declined, LocalTraining, PrivacyGuard, Response};

pub use crate::join::{JoinConfig, Status, StatusSnapshot};
pub use tg_net::Multiaddr;

/// The peer id a node with `key` has (what operators list in `allowed_peers`).
pub fn peer_id_of(key: &SigningKey) -> Result<PeerId, AgentError> {
    Ok(tg_net::peer_id_of(&key.verifying_key().to_bytes())?)
}

/// Starts an agent's network node for `key`, its event loop on the current
/// tokio runtime (LAN discovery when `discover`).
pub fn start_node(
    key: &SigningKey,
    listen: Vec<Multiaddr>,
    discover: bool,
) -> Result<(tg_net::Client, mpsc::Receiver<Event>), AgentError> {
    let mut net = tg_net::Config::new(tg_net::Role::Agent, listen);
    net.mdns = discover;
    net.channel_capacity = 64;
    let (client, events, event_loop) = tg_net::new(key.to_bytes(), net)?;
    tokio::spawn(event_loop.run());
    Ok((client, events))
}

struct Session {
    coordinator: PeerId,
    job: JobId,
    agent: Option<Agent>,
    /// The coordinator welcomed us (its models may now arrive).
    welcomed: bool,
}

/// How many bytes a packed frame from `peer` may unpack to: a model's
/// worth (the frame limit) from the coordinator that welcomed us, for its
/// job; nothing (packed frames refused) from anyone else or before the
/// welcome.
fn unpack_limit(session: Option<&Session>, peer: &PeerId, header: &signed::Header) -> usize {
    let welcomed = session
        .is_some_and(|s| s.welcomed && &s.coordinator == peer && s.job == header.binding.job);
    if welcomed {
        tg_proto::MAX_FRAME_BYTES
    } else {
        0
    }
}

/// Called with every round the agent declines (the owner's view of it).
pub type DeclineHook = Box<dyn Fn(&Declined) + Send + Sync>;

/// Runs the agent until its job finishes (`once`) or the network stops.
pub struct Runner {
    client: tg_net::Client,
    events: mpsc::Receiver<Event>,
    key: SigningKey,
    local: Arc<dyn LocalTraining>,
    config: JoinConfig,
    on_declined: Option<DeclineHook>,
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    nonces: NonceCounter,
    replay: ReplayGuard,
    pinned: Option<PeerId>,
    session: Option<Session>,
    connected: bool,
    started: Instant,
}

impl Runner {
    /// An agent runtime over a network node, training with `local`
    /// ([`crate::CandleTraining`] for a dataset and the built-in models).
    pub fn new(
        client: tg_net::Client,
        events: mpsc::Receiver<Event>,
        key: SigningKey,
        local: Arc<dyn LocalTraining>,
        config: JoinConfig,
        status: Arc<Status>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let pinned = config.coordinator.as_ref().and_then(peer_in);
        let stats = client.stats_handle();
        metrics.attach_network(move || stats.snapshot());
        status.update(|s| {
            s.state = "connecting".into();
            s.peer_id = client.local_peer_id().to_string();
            s.examples = local.examples();
            s.trust = if config.attest.insecure {
                "UNTRUSTED (--insecure: simulated attestation if a job requires a TEE)".into()
            } else {
                "not yet attested".into()
            };
        });
        Self {
            client,
            events,
            key,
            local,
            config,
            on_declined: None,
            status,
            metrics,
            nonces: NonceCounter::from_clock(),
            replay: ReplayGuard::default(),
            pinned,
            session: None,
            connected: false,
            started: Instant::now(),
        }
    }

    /// Calls `hook` with every round this agent declines, after it has
    /// told the coordinator.
    #[must_use]
    pub fn on_declined(mut self, hook: DeclineHook) -> Self {
        self.on_declined = Some(hook);
        self
    }

    /// Runs until the job ends (`once`), the coordinator refuses us, or the
    /// network stops.
    pub async fn run(mut self) -> Result<(), AgentError> {
        let mut backoff = Duration::from_millis(250);
        let mut next_dial = tokio::time::Instant::now();
        loop {
            let started = self.started;
            self.status
                .update(|s| s.uptime_s = started.elapsed().as_secs());
            if !self.connected && tokio::time::Instant::now() >= next_dial {
                if let Some(addr) = self.config.coordinator.clone()
                    && let Err(e) = self.client.dial(addr).await
                {
                    tracing::warn!("dial failed: {e}");
                }
                next_dial = tokio::time::Instant::now() + backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            let event = tokio::select! {
                e = self.events.recv() => e,
                () = tokio::time::sleep_until(next_dial), if !self.connected => continue,
            };
            let Some(event) = event else {
                return Err(tg_net::NetError::Stopped.into());
            };
            match event {
                Event::Connected { peer, .. } if self.is_coordinator_candidate(&peer) => {
                    self.connected = true;
                    backoff = Duration::from_millis(250);
                }
                Event::Disconnected { peer } if self.is_current_coordinator(&peer) => {
                    tracing::warn!(%peer, "lost the coordinator; reconnecting");
                    self.connected = false;
                    self.status.update(|s| s.state = "connecting".into());
                    next_dial = tokio::time::Instant::now() + backoff;
                }
                Event::Discovered { peer, addr }
                    if self.config.discover
                        && !self.connected
                        && self.pinned.is_none_or(|p| p == peer) =>
                {
                    let _ = self.client.dial(addr).await;
                }
                Event::Frame { peer, frame } => {
                    let stop = self.on_frame(peer, &frame).await?;
                    if stop {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
    }

    fn is_coordinator_candidate(&self, peer: &PeerId) -> bool {
        match (&self.pinned, &self.session) {
            (Some(p), _) => p == peer,
            (None, Some(s)) => &s.coordinator == peer,
            (None, None) => true,
        }
    }

    fn is_current_coordinator(&self, peer: &PeerId) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| &s.coordinator == peer)
            || self.pinned.as_ref() == Some(peer)
    }

    fn refuse(&self, reason: &str, detail: &str) {
        self.metrics.rejected(reason);
        self.status.update(|s| s.refused += 1);
        tracing::warn!(reason, "{detail}");
    }

    /// Handles one frame; true when the agent should stop.
    async fn on_frame(&mut self, peer: PeerId, frame: &[u8]) -> Result<bool, AgentError> {
        if !self.is_coordinator_candidate(&peer) {
            self.refuse(
                "unknown_coordinator",
                "frame from a peer that is not our coordinator",
            );
            return Ok(false);
        }
        let Some(key) = tg_net::ed25519_key_of(&peer) else {
            self.refuse("no_identity_key", "peer id carries no Ed25519 key");
            return Ok(false);
        };
        let (header, payload) = match signed::verify_frame(frame, &key) {
            Ok(x) => x,
            Err(e) => {
                self.refuse("bad_frame", &e.to_string());
                return Ok(false);
            }
        };
        if let Err(e) = self.replay.check(&header) {
            self.refuse("replay", &e.to_string());
            return Ok(false);
        }
        // A packed model is unpacked only from the coordinator that
        // welcomed us, for its job: a stranger's small frame must not cost
        // a model's worth of memory. Within the frame limit, as an unpacked
        // frame from it could be.
        let limit = unpack_limit(self.session.as_ref(), &peer, &header);
        let message = match signed::decode_verified::<ToAgent>(&header, payload, limit) {
            Ok(m) => m,
            Err(e) => {
                self.refuse("bad_frame", &e.to_string());
                return Ok(false);
            }
        };
        if let Some(s) = &self.session
            && header.binding.job != s.job
            && !matches!(message, ToAgent::Offer(_))
        {
            self.refuse("wrong_job", "frame for another job");
            return Ok(false);
        }
        match message {
            ToAgent::Offer(offer) => self.on_offer(peer, offer).await?,
            ToAgent::Welcome { job } => {
                // Our coordinator admitted us: its models may now arrive in
                // chunks. Only the peer whose offer we answered counts.
                if !self.is_current_coordinator(&peer) {
                    self.refuse(
                        "unknown_coordinator",
                        "a welcome from a peer we did not join",
                    );
                    return Ok(false);
                }
                if let Some(s) = self.session.as_mut() {
                    s.welcomed = true;
                }
                if let Err(e) = self.client.allow_transfers(peer, true).await {
                    tracing::warn!("cannot accept chunked frames from the coordinator: {e}");
                }
                tracing::info!(%job, "joined");
                self.status.update(|s| s.state = "joined".into());
            }
            ToAgent::Refused { reason, .. } => {
                self.status.update(|s| s.state = "refused".into());
                return Err(AgentError::Refused(reason));
            }
            ToAgent::Finished { job } => {
                tracing::info!(%job, "job finished");
                self.status.update(|s| s.state = "finished".into());
                self.session = None;
                return Ok(self.config.once);
            }
            other => self.on_work(other).await?,
        }
        Ok(false)
    }

    async fn on_offer(&mut self, peer: PeerId, offer: Offer) -> Result<(), AgentError> {
        let same_job = self
            .session
            .as_ref()
            .is_some_and(|s| s.job == offer.job && s.agent.is_some());
        // What this agent cannot train it refuses before anything else
        // (a schema its data does not meet, a model it cannot build).
        let learner = if same_job {
            None
        } else {
            Some(self.local.learner(&offer)?)
        };
        // An attested aggregator is checked before anything is sent to it.
        let sealing = crate::aggregator::check(
            &self.config.attest.aggregator,
            offer.job,
            &peer,
            offer.aggregator.as_ref(),
            std::time::SystemTime::now(),
        )?;
        if let Some(s) = &sealing {
            if s.trusted {
                tracing::info!("{}", s.label);
            } else {
                tracing::warn!("{}", s.label);
            }
        }
        self.status
            .update(|st| st.aggregator = sealing.as_ref().map(|s| s.label.clone()));
        if same_job && let Some(agent) = self.session.as_mut().and_then(|s| s.agent.as_mut()) {
            // A job offered with an attested aggregator stays sealed: a
            // re-offer without one would downgrade this agent to plaintext.
            if agent.sealing().is_some() && sealing.is_none() {
                return Err(AgentError::Aggregator(
                    "the coordinator re-offered this job without the attested aggregator it offered before".into(),
                ));
            }
            agent.set_sealing(sealing.clone());
        }
        let evidence = match offer.attestation_nonce {
            None => {
                self.status.update(|s| {
                    if !s.trust.starts_with("UNTRUSTED") {
                        s.trust = "not required".into();
                    }
                });
                None
            }
            Some(nonce) => {
                let me = self.client.local_peer_id();
                let (bytes, label) =
                    crate::tee::evidence_for(&self.config.attest, &self.key, &me, &nonce)?;
                if label.starts_with("UNTRUSTED") {
                    tracing::warn!("{label}");
                }
                self.status.update(|s| s.trust = label);
                Some(bytes)
            }
        };
        if let Some(learner) = learner {
            let id = AgentId::new(self.client.local_peer_id().to_string())
                .map_err(|e| AgentError::Refused(e.to_string()))?;
            let dataset = self.local.ledger_key(&self.config.policy);
            let ledger = match &self.config.ledger_dir {
                Some(dir) => {
                    crate::OwnerLedger::open(dir, dataset.clone()).map_err(AgentError::Ledger)?
                }
                // In memory: carried from the previous job, so a new job id
                // does not reset it.
                None => self
                    .session
                    .as_ref()
                    .and_then(|s| s.agent.as_ref())
                    .map_or_else(
                        || crate::OwnerLedger::in_memory(dataset.clone()),
                        |a| a.ledger().clone(),
                    ),
            };
            let mut agent = Agent::with_learner(id, learner, self.config.seed, dataset)
                .with_identity(self.key.clone())
                .with_owner(self.config.policy.clone(), ledger)
                .with_private_job(offer.privacy.is_some())
                .with_sealing(sealing);
            if let Some(name) = &self.config.seed_name {
                agent = agent.with_seed_name(name.clone());
            }
            if let Some(p) = offer.privacy
                && matches!(p.mode, DpMode::LocalSgd(_))
            {
                agent = agent.with_privacy_guard(PrivacyGuard::new(
                    p.target_epsilon,
                    p.delta,
                    p.accountant,
                ));
            }
            self.session = Some(Session {
                coordinator: peer,
                job: offer.job,
                agent: Some(agent),
                welcomed: false,
            });
        }
        if self.pinned.is_none() {
            // Trust on first use: this coordinator, and only it, from now on.
            self.pinned = Some(peer);
        }
        self.status.update(|s| {
            s.coordinator = Some(peer.to_string());
            s.job = Some(offer.job.to_string());
        });
        let join = ToCoordinator::Join(JoinRequest {
            job: offer.job,
            name: self.config.name.clone(),
            token: self.config.token.clone(),
            evidence,
            certificate: self.config.certificate.clone().map(Box::new),
        });
        self.reply(&join).await;
        Ok(())
    }

    async fn on_work(&mut self, message: ToAgent) -> Result<(), AgentError> {
        let Some(session) = self.session.as_mut() else {
            self.refuse("no_session", "work before an offer");
            return Ok(());
        };
        let Some(mut agent) = session.agent.take() else {
            return Ok(());
        };
        let round = message.binding().round;
        self.status.update(|s| {
            s.state = "training".into();
            s.round = round;
        });
        let started = Instant::now();
        // Training and unmasking are CPU work: off the async threads.
        let (mut agent, result) = tokio::task::spawn_blocking(move || {
            let r = agent.handle(message);
            (agent, r)
        })
        .await
        .map_err(|e| AgentError::Refused(format!("the training task failed: {e}")))?;
        let delta = self
            .config
            .policy
            .budget
            .and_then(|b| tg_privacy::Delta::new(b.delta).ok())
            .or_else(|| tg_privacy::Delta::new(1e-5).ok());
        let spent = delta.map(|d| agent.ledger().epsilon(d));
        let declined = agent.take_declined();
        self.status.update(|s| {
            s.epsilon = spent.filter(|e| e.is_finite() && *e > 0.0);
            s.epsilon_unbounded = spent.is_some_and(f64::is_infinite);
        });
        if let Some(s) = self.session.as_mut() {
            s.agent = Some(agent);
        }
        self.metrics
            .stage(round, "answered", started.elapsed().as_secs_f64());
        self.status.update(|s| s.state = "joined".into());
        match result {
            Ok(Response::Reply(reply)) => {
                self.status.update(|s| s.answered += 1);
                self.reply(&reply).await;
            }
            Ok(Response::Finished(_)) => {}
            Err(e) => self.refuse("unhandled", &e.to_string()),
        }
        if let Some(d) = declined {
            self.status.update(|s| {
                s.declined += 1;
                s.last_declined = Some(format!("round {}: {}: {}", d.round, d.reason, d.detail));
            });
            if let Some(hook) = &self.on_declined {
                hook(&d);
            }
        }
        Ok(())
    }

    async fn reply(&mut self, message: &ToCoordinator) {
        let Some(s) = &self.session else { return };
        let coordinator = s.coordinator;
        match signed::seal(&self.key, self.nonces.next(), message) {
            Ok(frame) => {
                if let Err(e) = self.client.send(coordinator, frame).await {
                    tracing::warn!("reply not delivered: {e}");
                }
            }
            Err(e) => tracing::error!("cannot sign a reply: {e}"),
        }
    }
}

/// The `/p2p/<id>` component of an address.
pub fn peer_in(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        tg_net::multiaddr::Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
