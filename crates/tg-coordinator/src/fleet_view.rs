//! What the coordinator knows about each agent right now, for operators.
//!
//! Design decision: the transport writes, the API reads, and nothing here is
//! persisted — last-seen times and latencies are facts about this process's
//! connections, not history (history is rounds and the audit log). A plain
//! mutex-guarded map is enough: writes are a few per frame, reads are a
//! snapshot copy per API request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One agent as the operator sees it.
#[derive(Clone, Debug, Serialize)]
pub struct AgentView {
    /// Peer id (the agent's identity).
    pub peer_id: String,
    /// The name the agent gave when it joined.
    pub name: String,
    /// The job it joined.
    pub job: String,
    /// `online` while connected, `offline` after it disconnected.
    pub status: &'static str,
    /// When it joined (Unix ms).
    pub joined_at_ms: i64,
    /// When we last heard from it (Unix ms).
    pub last_seen_ms: i64,
    /// Time from our last frame to its last reply, in ms: its latency for
    /// the stage it last answered (training included for uploads).
    pub last_latency_ms: Option<u64>,
    /// Bytes it sent us.
    pub bytes_up: u64,
    /// Bytes we sent it.
    pub bytes_down: u64,
    /// Its attestation outcome when the job requires one (`None`: not
    /// required).
    pub attestation: Option<serde_json::Value>,
}

#[derive(Debug)]
struct Entry {
    view: AgentView,
    last_sent: Option<Instant>,
}

/// A shared, cheap-to-clone map of agents (peer id → view).
#[derive(Clone, Debug, Default)]
pub struct FleetView(Arc<Mutex<BTreeMap<String, Entry>>>);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl FleetView {
    fn update(&self, peer: &str, f: impl FnOnce(&mut Entry)) {
        if let Ok(mut map) = self.0.lock()
            && let Some(e) = map.get_mut(peer)
        {
            f(e);
        }
    }

    /// An agent was admitted to `job`.
    pub fn joined(
        &self,
        peer: &str,
        name: &str,
        job: &str,
        attestation: Option<serde_json::Value>,
    ) {
        let now = now_ms();
        if let Ok(mut map) = self.0.lock() {
            map.insert(
                peer.to_owned(),
                Entry {
                    view: AgentView {
                        peer_id: peer.to_owned(),
                        name: name.to_owned(),
                        job: job.to_owned(),
                        status: "online",
                        joined_at_ms: now,
                        last_seen_ms: now,
                        last_latency_ms: None,
                        bytes_up: 0,
                        bytes_down: 0,
                        attestation,
                    },
                    last_sent: None,
                },
            );
        }
    }

    /// We sent `bytes` to the agent.
    pub fn sent(&self, peer: &str, bytes: usize) {
        self.update(peer, |e| {
            e.view.bytes_down += bytes as u64;
            e.last_sent = Some(Instant::now());
        });
    }

    /// A verified frame of `bytes` arrived from the agent.
    pub fn heard(&self, peer: &str, bytes: usize) {
        self.update(peer, |e| {
            e.view.bytes_up += bytes as u64;
            e.view.last_seen_ms = now_ms();
            e.view.status = "online";
            if let Some(sent) = e.last_sent.take() {
                e.view.last_latency_ms = Some(sent.elapsed().as_millis() as u64);
            }
        });
    }

    /// The agent's connection closed.
    pub fn disconnected(&self, peer: &str) {
        self.update(peer, |e| e.view.status = "offline");
    }

    /// Every agent, ordered by peer id.
    pub fn snapshot(&self) -> Vec<AgentView> {
        self.0
            .lock()
            .map(|m| m.values().map(|e| e.view.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_bytes_latency_and_status() {
        let fleet = FleetView::default();
        fleet.heard("unknown", 10); // ignored: never joined
        fleet.joined("p1", "robot-1", "job", None);
        fleet.sent("p1", 100);
        fleet.heard("p1", 40);
        fleet.disconnected("p1");
        let all = fleet.snapshot();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].bytes_down, 100);
        assert_eq!(all[0].bytes_up, 40);
        assert!(all[0].last_latency_ms.is_some());
        assert_eq!(all[0].status, "offline");
    }
}
