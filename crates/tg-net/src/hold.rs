//! Connections held open on request, until a deadline.
//!
//! A node closes a connection once it has carried no stream for the idle
//! timeout. Most connections (DHT walks, provider announcements, probes)
//! are done with in a second, and every open one holds its transport
//! buffers, so the timeout should be short. A few must outlive their
//! streams: a worker answers a task's request at once ("queued") and sends
//! the result minutes later over the same connection, which is the only way
//! back to a submitter behind NAT. Such a connection is *held*: it stays
//! open until the hold's deadline, then closes after the idle timeout like
//! any other. Holds only ever keep a connection open; they open none.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use tokio::time::{Instant, Sleep};

/// Holds kept at once; the oldest deadlines are dropped beyond it.
const MAX_HOLDS: usize = 4096;
/// Longest hold: a caller's mistake cannot pin a connection for good.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(3600);

/// Keeps held peers' connections open until their deadlines.
#[derive(Default)]
pub(crate) struct Behaviour {
    until: HashMap<PeerId, Instant>,
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    notify: VecDeque<(PeerId, ConnectionId, Instant)>,
}

impl Behaviour {
    /// Holds every connection to `peer` (and any made before the deadline)
    /// open until `for_` from now, or longer if already held longer.
    pub(crate) fn hold(&mut self, peer: PeerId, for_: Duration) {
        let now = Instant::now();
        let deadline = now + for_.min(MAX_HOLD);
        if self.until.len() >= MAX_HOLDS {
            self.until.retain(|_, d| *d > now);
            if self.until.len() >= MAX_HOLDS
                && let Some(first) = self.until.iter().min_by_key(|(_, d)| **d).map(|(p, _)| *p)
            {
                self.until.remove(&first);
            }
        }
        let d = self.until.entry(peer).or_insert(deadline);
        *d = (*d).max(deadline);
        let d = *d;
        for c in self.connections.get(&peer).into_iter().flatten() {
            self.notify.push_back((peer, *c, d));
        }
    }

    /// Whether `peer` is held now.
    #[cfg(test)]
    pub(crate) fn is_held(&self, peer: &PeerId) -> bool {
        self.until.get(peer).is_some_and(|d| *d > Instant::now())
    }

    fn handler(&mut self, peer: PeerId, id: ConnectionId) -> Handler {
        self.connections.entry(peer).or_default().insert(id);
        let until = self.until.get(&peer).copied();
        if until.is_some_and(|d| d <= Instant::now()) {
            self.until.remove(&peer);
        }
        Handler::new(until)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, id))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(peer, id))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::ConnectionClosed(c) = event
            && let Some(set) = self.connections.get_mut(&c.peer_id)
        {
            set.remove(&c.connection_id);
            if set.is_empty() {
                self.connections.remove(&c.peer_id);
            }
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        match e {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.notify.pop_front() {
            Some((peer_id, id, until)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(id),
                event: until,
            }),
            None => Poll::Pending,
        }
    }
}

/// One connection's hold: open while the deadline is ahead; a timer wakes
/// the connection when it passes, so that its idle timeout starts then.
pub(crate) struct Handler {
    until: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Handler {
    fn new(until: Option<Instant>) -> Self {
        let mut h = Self {
            until: None,
            timer: None,
        };
        if let Some(d) = until {
            h.extend(d);
        }
        h
    }

    fn extend(&mut self, deadline: Instant) {
        if self.until.is_some_and(|u| u >= deadline) || deadline <= Instant::now() {
            return;
        }
        self.until = Some(deadline);
        self.timer = Some(Box::pin(tokio::time::sleep_until(deadline)));
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Instant;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.until.is_some_and(|u| u > Instant::now())
    }

    fn on_behaviour_event(&mut self, deadline: Instant) {
        self.extend(deadline);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if let Some(t) = self.timer.as_mut()
            && t.as_mut().poll(cx).is_ready()
        {
            // The deadline passed: the connection re-reads keep-alive after
            // this poll and starts its idle timeout.
            self.timer = None;
            self.until = None;
        }
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        _: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_the_later_deadline_and_is_capped() {
        let mut b = Behaviour::default();
        let p = PeerId::random();
        b.hold(p, Duration::from_secs(10));
        b.hold(p, Duration::from_secs(2));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(
            b.is_held(&p),
            "the shorter hold must not cut the longer one"
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!b.is_held(&p));
        b.hold(p, Duration::from_secs(u64::MAX / 4));
        tokio::time::advance(MAX_HOLD + Duration::from_secs(1)).await;
        assert!(!b.is_held(&p), "holds are capped at MAX_HOLD");
    }

    #[tokio::test(start_paused = true)]
    async fn the_hold_table_is_bounded() {
        let mut b = Behaviour::default();
        for _ in 0..MAX_HOLDS + 10 {
            b.hold(PeerId::random(), Duration::from_secs(60));
        }
        assert!(b.until.len() <= MAX_HOLDS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_keeps_alive_until_its_deadline_only() {
        let mut h = Handler::new(Some(Instant::now() + Duration::from_secs(3)));
        assert!(h.connection_keep_alive());
        h.on_behaviour_event(Instant::now() + Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            h.connection_keep_alive(),
            "an earlier deadline does not shorten the hold"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!h.connection_keep_alive());
        assert!(!Handler::new(None).connection_keep_alive());
    }
}
