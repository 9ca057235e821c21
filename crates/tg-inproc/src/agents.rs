//! The simulated agents: one tokio task per agent, at most one training
//! job per core, and seeded fault injection.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tg_agent::{Agent, Handled};
use tg_coordinator::{Frame, Incoming, TransportEvent};
use tg_proto::ToAgent;
use tg_secagg::messages::ServerBody;
use tokio::sync::{Semaphore, mpsc};

/// Seeded fault injection: does `agent` drop out of `round`?
#[derive(Clone, Copy)]
pub(crate) struct Dropout {
    pub(crate) p: f64,
    pub(crate) seed: u64,
    pub(crate) agent: u64,
}

impl Dropout {
    /// Does the agent vanish on receiving this frame? At a training request
    /// with probability p; in a secure round also at each later protocol
    /// stage with probability p/10, so dropouts hit every stage.
    fn drops(&self, msg: &ToAgent) -> Option<u32> {
        if self.p <= 0.0 {
            return None;
        }
        let (round, stage, p) = match msg {
            ToAgent::Train(req) => (req.at.round, 0u64, self.p),
            ToAgent::SecAgg(m) => {
                let stage = match m.body {
                    ServerBody::NeighbourKeys(_) => 1,
                    ServerBody::SharesForYou(_) => 2,
                    ServerBody::Survivors(_) => 3,
                    _ => 4,
                };
                (m.at.round, stage, self.p / 10.0)
            }
            _ => return None,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (self.agent << 32) ^ u64::from(round) ^ (stage << 56) ^ 0xd409_0b70,
        );
        rng.random_bool(p).then_some(round)
    }
}

pub(crate) async fn agent_task(
    agent: Agent,
    mut inbox: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<TransportEvent>,
    fault: Dropout,
    permits: Arc<Semaphore>,
) {
    let id = agent.id().clone();
    let mut agent = Some(agent);
    while let Some(frame) = inbox.recv().await {
        if let Ok(msg) = tg_proto::decode::<ToAgent>(&frame)
            && let Some(round) = fault.drops(&msg)
        {
            tracing::debug!(agent = %id, round, "fault injection: dropping out");
            if events
                .send(TransportEvent::Disconnected(id.clone()))
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let Ok(_permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(mut a) = agent.take() else { return };
        let joined = tokio::task::spawn_blocking(move || {
            let r = a.handle_frame(&frame);
            (a, r)
        })
        .await;
        let Ok((a, result)) = joined else {
            // The handler panicked (a learner's code): the agent is gone,
            // and the round should not wait for it.
            let _ = events.send(TransportEvent::Disconnected(id.clone())).await;
            return;
        };
        agent = Some(a);
        let event = match result {
            Ok(Handled::Reply(frame)) => TransportEvent::Received {
                from: id.clone(),
                bytes: frame.len() as u64,
                message: Incoming::from_frame(Frame::whole(frame)),
            },
            Ok(Handled::Finished(_)) => return,
            Err(e) => {
                tracing::warn!(agent = %id, error = %e, "agent could not handle a frame");
                TransportEvent::Disconnected(id.clone())
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}
