//! The in-process transport: one bounded inbox per agent, one shared event queue.

use tg_coordinator::{Outgoing, Transport, TransportEvent};
use tg_types::AgentId;
use tokio::sync::mpsc;

/// Bounded channels standing in for network connections.
pub struct ChannelTransport {
    inboxes: Vec<(AgentId, mpsc::Sender<Vec<u8>>)>,
    events: mpsc::Receiver<TransportEvent>,
}

impl ChannelTransport {
    /// A transport over the given agent inboxes and event queue.
    pub fn new(
        inboxes: Vec<(AgentId, mpsc::Sender<Vec<u8>>)>,
        events: mpsc::Receiver<TransportEvent>,
    ) -> Self {
        Self { inboxes, events }
    }
}

impl Transport for ChannelTransport {
    fn connected(&self) -> Vec<AgentId> {
        self.inboxes
            .iter()
            .filter(|(_, tx)| !tx.is_closed())
            .map(|(id, _)| id.clone())
            .collect()
    }

    async fn send(&mut self, to: &AgentId, message: &Outgoing) -> Result<u64, String> {
        let tx = self
            .inboxes
            .iter()
            .find(|(id, _)| id == to)
            .map(|(_, tx)| tx.clone())
            .ok_or_else(|| format!("{to} is not connected"))?;
        tx.send(message.bytes().to_vec())
            .await
            .map(|()| message.len())
            .map_err(|_| format!("{to} has gone"))
    }

    async fn next_event(&mut self) -> Option<TransportEvent> {
        self.events.recv().await
    }
}
