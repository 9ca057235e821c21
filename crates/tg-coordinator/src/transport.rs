//! The typed transport between the round logic and the agents.
//!
//! Design decision: a transport hands the round logic each message decoded
//! exactly once. Small messages (declines, evaluations, SecAgg+ stages)
//! arrive decoded ([`Incoming::Message`]). A training reply, the one message
//! as large as the model, arrives as its verified payload still in the
//! buffer it was received in ([`Incoming::Trained`]), and the round folds
//! it from there in place (`tg_proto::decode_trained`): no copy and no
//! decoded update is ever built. Outgoing messages are encoded once
//! ([`Outgoing`]) with their binding, so a transport that signs them need
//! not decode them again.

use std::future::Future;
use std::ops::{Deref, Range};

use tg_proto::{Binding, Bound, ProtoError, ToAgent, ToCoordinator};
use tg_types::AgentId;

/// A received message's encoded bytes, kept in the buffer they arrived in
/// (a signed frame's payload is a slice of the frame).
#[derive(Debug)]
pub struct Frame {
    buf: Vec<u8>,
    range: Range<usize>,
}

impl Frame {
    /// The whole buffer is the message.
    pub fn whole(buf: Vec<u8>) -> Self {
        let range = 0..buf.len();
        Self { buf, range }
    }

    /// The message is `buf[range]`; None if the range is outside `buf`.
    pub fn within(buf: Vec<u8>, range: Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= buf.len()).then_some(Self { buf, range })
    }
}

impl Deref for Frame {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }
}

/// A message from an agent, decoded once.
#[derive(Debug)]
pub enum Incoming {
    /// A training reply, to be read in place and folded.
    Trained(Frame),
    /// Any other message.
    Message(ToCoordinator),
    /// Bytes that are not a message (the round records why it refused them).
    Undecodable(String),
}

impl Incoming {
    /// Classifies an encoded `ToCoordinator`: a training reply stays in its
    /// frame (its full checks run when the round reads it); anything else
    /// is decoded now.
    pub fn from_frame(frame: Frame) -> Self {
        if tg_proto::trained_at(&frame).is_some() {
            return Incoming::Trained(frame);
        }
        match tg_proto::decode::<ToCoordinator>(&frame) {
            Ok(m) => Incoming::Message(m),
            Err(e) => Incoming::Undecodable(e.to_string()),
        }
    }
}

/// Something that happened on the transport.
// Each event is moved once, from the transport to the round; boxing the
// large variant would cost an allocation per message for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum TransportEvent {
    /// A message arrived from an agent.
    Received {
        /// Sender as authenticated by the transport.
        from: AgentId,
        /// The message.
        message: Incoming,
        /// Bytes it took on the wire.
        bytes: u64,
    },
    /// An agent's connection closed (it counts as a dropout for its round).
    Disconnected(AgentId),
}

/// A message to agents, encoded once, with its binding (and, for a
/// network, packed once).
#[derive(Clone, Debug)]
pub struct Outgoing {
    bytes: Vec<u8>,
    binding: Binding,
    packed: std::sync::OnceLock<Option<Vec<u8>>>,
}

impl Outgoing {
    /// Encodes `message`.
    pub fn encode(message: &ToAgent) -> Result<Self, ProtoError> {
        Ok(Self {
            bytes: tg_proto::encode(message)?,
            binding: message.binding(),
            packed: std::sync::OnceLock::new(),
        })
    }

    /// The encoded message.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded message packed with zstd, when it carries a model (a
    /// training or evaluation request: agents unpack nothing else) and
    /// packing pays ([`tg_compress::download::pack`]); packed on first use,
    /// once for every agent it goes to.
    pub fn packed(&self) -> Option<&[u8]> {
        use tg_proto::signed::stage;
        self.packed
            .get_or_init(|| {
                [stage::TRAIN, stage::EVALUATE]
                    .contains(&self.binding.stage)
                    .then(|| tg_compress::download::pack(&self.bytes))
                    .flatten()
            })
            .as_deref()
    }

    /// The message, packed first on a blocking thread when `pack` (zstd of
    /// a large model takes milliseconds to seconds: not on an async thread).
    pub async fn prepare(self, pack: bool) -> Result<Self, ProtoError> {
        if !pack {
            return Ok(self);
        }
        tokio::task::spawn_blocking(move || {
            let _ = self.packed();
            self
        })
        .await
        .map_err(|e| ProtoError::Encode(format!("the packing task failed: {e}")))
    }

    /// Its (job, round, stage).
    pub fn binding(&self) -> Binding {
        self.binding
    }

    /// Its encoded length.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Whether it is empty (never, for an encoded message).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// How the coordinator reaches agents.
pub trait Transport: Send {
    /// Agents currently reachable.
    fn connected(&self) -> Vec<AgentId>;
    /// Sends a message: the bytes it takes (on the wire, for a network);
    /// an error means the agent is unreachable.
    fn send(
        &mut self,
        to: &AgentId,
        message: &Outgoing,
    ) -> impl Future<Output = Result<u64, String>> + Send;
    /// The next event, or `None` when the transport is closed for good.
    fn next_event(&mut self) -> impl Future<Output = Option<TransportEvent>> + Send;
    /// Whether it sends model-carrying messages packed
    /// ([`Outgoing::packed`]): the round then packs them once, off the
    /// async threads, before sending ([`Outgoing::prepare`]).
    fn packs(&self) -> bool {
        false
    }
    /// The Ed25519 identity of an agent, if the transport authenticated one.
    fn identity(&self, agent: &AgentId) -> Option<[u8; 32]> {
        let _ = agent;
        None
    }
    /// The fleet certificate an agent presented when it joined, if any.
    fn certificate(&self, agent: &AgentId) -> Option<tg_proto::Certificate> {
        let _ = agent;
        None
    }
    /// Waits until messages already accepted by [`Transport::send`] have
    /// been delivered or have failed (the job's last messages before exit).
    fn flush(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Tells the fleet that `round` reached `stage` (after the store has
    /// recorded it). Informational; the default does nothing.
    fn announce(
        &mut self,
        round: u32,
        stage: tg_types::record::RoundStage,
    ) -> impl Future<Output = ()> + Send {
        let _ = (round, stage);
        async {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tg_proto::{EvaluateRequest, RoundRef, SecAggToAgent};
    use tg_types::{JobId, NamedTensor, Parameters};

    #[test]
    fn only_messages_that_carry_a_model_are_packed() {
        let at = RoundRef {
            job: JobId::from_bytes([1; 16]),
            round: 1,
        };
        // 64k equal weights: packs to almost nothing.
        let model = Parameters::new(vec![NamedTensor {
            name: "w".into(),
            shape: vec![65_536],
            data: vec![0.25; 65_536],
        }])
        .unwrap();
        let evaluate = Outgoing::encode(&ToAgent::Evaluate(EvaluateRequest {
            at,
            model,
            baseline: None,
        }))
        .unwrap();
        assert!(
            evaluate
                .packed()
                .is_some_and(|p| p.len() < evaluate.bytes().len() / 10)
        );
        // A large, compressible secure-aggregation message is sent as it
        // is: agents unpack nothing but models.
        let survivors = tg_secagg::messages::ServerBody::Survivors((0..20_000).collect());
        let secagg = Outgoing::encode(&ToAgent::SecAgg(SecAggToAgent {
            at,
            body: survivors,
        }))
        .unwrap();
        assert!(secagg.bytes().len() > tg_compress::download::MIN_PACKED);
        assert!(secagg.packed().is_none());
    }
}
