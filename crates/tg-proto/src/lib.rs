//! Wire messages between a coordinator and its agents.
//!
//! Design decision: the in-process federation and the network federation carry
//! *the same bytes*. Every message is wrapped in an [`Envelope`] with a protocol
//! version and encoded with postcard (a compact, deterministic serde format),
//! so swapping the transport never changes the logic, and upload sizes measured
//! in process are the sizes a network would carry. Decoding is bounded:
//! [`decode`] refuses frames larger than [`MAX_FRAME_BYTES`] before parsing.

mod certificate;
mod decline;
mod join;
mod sealed;
mod secure;
pub mod signed;
mod view;

pub use certificate::{CertError, Certificate, key_from_hex};
pub use decline::DeclineReason;
pub use join::{DataSchema, Dtype, JoinRequest, Offer};
pub use sealed::{
    AggregatorEvidence, SealedReply, SessionSecret, aggregator_nonce, seal_reply, seal_reply_with,
};
pub use secure::SecureRound;
pub use signed::{Binding, Bound, Header, NonceCounter, ReplayGuard};
pub use view::{TrainReplyView, decode_trained, trained_at};

use serde::{Deserialize, Serialize};
use tg_types::spec::{LocalObjective, TrainConfig};
use tg_types::{AgentId, JobId, Parameters};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 14;

/// Largest frame [`decode`] accepts (256 MiB). Larger models are streamed in
/// chunks by the network transport.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

/// The largest frame an agent sends for a model of `num_values` values,
/// with room to spare: 16 bytes a value (a dense `f32` update and a
/// SCAFFOLD control delta take 8; a top-k update keeping every value, 5
/// bytes of index gap and 4 of value, with a dense control delta, 13;
/// masked SecAgg+ inputs at most 4), plus 1 MiB for everything else. A
/// coordinator refuses larger frames before reserving memory for them, so
/// what one admitted peer can make it hold scales with the job's model,
/// not with [`MAX_FRAME_BYTES`].
pub fn max_agent_frame(num_values: usize) -> u64 {
    let bound = (num_values as u64)
        .saturating_mul(16)
        .saturating_add(1 << 20);
    bound.min(MAX_FRAME_BYTES as u64)
}

/// Errors encoding or decoding a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The frame is larger than [`MAX_FRAME_BYTES`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    FrameTooLarge(usize),
    /// The bytes are not a valid envelope.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("protocol version {got} not supported (this build speaks {PROTOCOL_VERSION})")]
    Version {
        /// Version found in the frame.
        got: u16,
    },
    /// Serialization failed.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The frame decodes, but is not the one canonical encoding of its
    /// message (e.g. an over-long varint). Rejected so every message has
    /// exactly one byte form — what signatures and replay checks rely on.
    #[error("frame is not canonically encoded")]
    NonCanonical,
    /// The frame's signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The frame is signed by a key other than the connection's identity.
    #[error("frame signed by a key other than the sender's identity")]
    WrongSender,
    /// The signed header does not describe the message it carries.
    #[error("signed header does not match the message (job, round or stage)")]
    BindingMismatch,
    /// The nonce is not newer than the last one seen from this sender.
    #[error("replayed frame: nonce {nonce} is not newer than {last}")]
    Replay {
        /// Nonce in the frame.
        nonce: u64,
        /// Last nonce accepted from the sender.
        last: u64,
    },
}

/// Which round of which job a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRef {
    /// Job.
    pub job: JobId,
    /// 1-based round.
    pub round: u32,
}

/// Instructions for one agent's local training in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainRequest {
    /// Round.
    pub at: RoundRef,
    /// The global model to start from.
    pub global: Parameters,
    /// Local hyper-parameters.
    pub config: TrainConfig,
    /// Strategy-specific local objective (FedProx term, SCAFFOLD control).
    pub objective: LocalObjective,
    /// Secure aggregation: when set, the agent does not send its update but
    /// enters the round's SecAgg+ protocol with it.
    pub secure: Option<Box<SecureRound>>,
}

/// A secure-aggregation message from the coordinator to one agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecAggToAgent {
    /// Round.
    pub at: RoundRef,
    /// The stage's input for this agent.
    pub body: tg_secagg::messages::ServerBody,
}

/// A secure-aggregation message from an agent (signed inside).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecAggToCoordinator {
    /// Round.
    pub at: RoundRef,
    /// Sender.
    pub agent: AgentId,
    /// The signed protocol message.
    pub msg: tg_secagg::messages::Signed,
}

/// An agent's result of local training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReply {
    /// Round.
    pub at: RoundRef,
    /// Sender.
    pub agent: AgentId,
    /// `local − global`: the model update.
    pub update: Parameters,
    /// Aggregation weight: the number of local training examples, or 1
    /// under DP-SGD, where the size of a private dataset is not released.
    pub num_examples: u64,
    /// Mean training loss over the local epochs (None under DP-SGD: the loss
    /// on private data is not released).
    pub train_loss: Option<f64>,
    /// Optimizer steps taken.
    pub steps: u64,
    /// SCAFFOLD: change of the client control variate, `c_i⁺ − c_i`.
    pub control_delta: Option<Parameters>,
    /// ε the agent's own data has spent, by its own accounting (DP-SGD).
    pub epsilon: Option<f64>,
    /// The update compressed as the round's `TrainConfig::compress` asked;
    /// `update` is then empty.
    pub compressed: Option<tg_compress::Compressed>,
}

/// Request for an agent to evaluate a model on its local data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluateRequest {
    /// Round.
    pub at: RoundRef,
    /// Model to evaluate.
    pub model: Parameters,
    /// The rollout gate's baseline (the current model), evaluated in the
    /// same answer: one request per round still, and the two figures are
    /// paired by construction.
    pub baseline: Option<Parameters>,
}

/// One model's evaluation on an agent's own data.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluationFigures {
    /// Examples (episodes) evaluated.
    pub num_examples: u64,
    /// Mean loss.
    pub loss: f64,
    /// Accuracy (success rate) in [0, 1].
    pub accuracy: f64,
}

/// An agent's local evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluateReply {
    /// Round.
    pub at: RoundRef,
    /// Sender.
    pub agent: AgentId,
    /// Examples evaluated.
    pub num_examples: u64,
    /// Mean loss.
    pub loss: f64,
    /// Accuracy in [0, 1].
    pub accuracy: f64,
    /// The baseline's evaluation, when the request carried one.
    pub baseline: Option<EvaluationFigures>,
    /// The model's success counts per task (rollout evaluations), when the
    /// agent's evaluation reports them; they must add up to
    /// `num_examples` (`tg_types::record::task_successes_problem`).
    /// Decoded counting, at most 64: a few bytes each on the wire, dozens
    /// in memory.
    #[serde(deserialize_with = "tg_types::view::bounded::evaluated_tasks")]
    pub tasks: Vec<tg_types::record::TaskSuccesses>,
}

/// Coordinator → agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ToAgent {
    /// The job on offer, sent to every agent that connects.
    Offer(Offer),
    /// The agent is admitted to the job.
    Welcome {
        /// Job.
        job: JobId,
    },
    /// The agent is not admitted.
    Refused {
        /// Job.
        job: JobId,
        /// Why, and what to do.
        reason: String,
    },
    /// Train locally and reply with [`ToCoordinator::Trained`].
    Train(TrainRequest),
    /// Evaluate and reply with [`ToCoordinator::Evaluated`].
    Evaluate(EvaluateRequest),
    /// The job is over; the agent may leave.
    Finished {
        /// Job.
        job: JobId,
    },
    /// The next secure-aggregation stage.
    SecAgg(SecAggToAgent),
}

/// Agent → coordinator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ToCoordinator {
    /// A request to join the job offered.
    Join(JoinRequest),
    /// Result of [`ToAgent::Train`].
    Trained(TrainReply),
    /// Result of [`ToAgent::Evaluate`].
    Evaluated(EvaluateReply),
    /// A secure-aggregation message.
    SecAgg(SecAggToCoordinator),
    /// The agent could not do what was asked (bad data, wrong layout, …).
    Declined {
        /// Round.
        at: RoundRef,
        /// Sender.
        agent: AgentId,
        /// Why, as a fixed code: a free-text field would be a channel for
        /// local data to leave the agent (an error message quoting a CSV
        /// row). The details stay in the agent's own log.
        reason: DeclineReason,
    },
    /// Result of [`ToAgent::Train`] sealed to the job's attested aggregator
    /// (its `Trained` frame, encrypted to the session key its evidence binds).
    Sealed(SealedReply),
}

/// Versioned wrapper of every frame.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope<T> {
    version: u16,
    body: T,
}

/// Encodes a message into a frame.
pub fn encode<T: Serialize>(body: &T) -> Result<Vec<u8>, ProtoError> {
    postcard::to_stdvec(&Envelope {
        version: PROTOCOL_VERSION,
        body,
    })
    .map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Decodes a frame (untrusted bytes): size-checked, version-checked, the whole
/// frame consumed, and the bytes must be the canonical encoding of the message.
pub fn decode<T: Serialize + for<'de> Deserialize<'de>>(frame: &[u8]) -> Result<T, ProtoError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(ProtoError::FrameTooLarge(frame.len()));
    }
    let (version, rest): (u16, &[u8]) =
        postcard::take_from_bytes(frame).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if version != PROTOCOL_VERSION {
        return Err(ProtoError::Version { got: version });
    }
    let (body, rest): (T, &[u8]) =
        postcard::take_from_bytes(rest).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    // postcard accepts over-long varints; insist on the one canonical form,
    // comparing as the message re-serializes rather than building a copy.
    if !is_canonical(&body, frame)? {
        return Err(ProtoError::NonCanonical);
    }
    Ok(body)
}

/// Whether `frame` is exactly the encoding of `body` (no allocation).
fn is_canonical<T: Serialize>(body: &T, frame: &[u8]) -> Result<bool, ProtoError> {
    /// A postcard output that compares against expected bytes instead of storing.
    struct Compare<'a> {
        expected: &'a [u8],
        at: usize,
        equal: bool,
    }
    impl postcard::ser_flavors::Flavor for Compare<'_> {
        type Output = bool;
        fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
            let end = self.at + data.len();
            self.equal &= self.expected.get(self.at..end) == Some(data);
            self.at = end;
            Ok(())
        }
        fn try_push(&mut self, data: u8) -> postcard::Result<()> {
            self.try_extend(&[data])
        }
        fn finalize(self) -> postcard::Result<bool> {
            Ok(self.equal && self.at == self.expected.len())
        }
    }
    let envelope = Envelope {
        version: PROTOCOL_VERSION,
        body,
    };
    postcard::serialize_with_flavor(
        &envelope,
        Compare {
            expected: frame,
            at: 0,
            equal: true,
        },
    )
    .map_err(|e| ProtoError::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tg_types::NamedTensor;
    use tg_types::spec::OptimizerSpec;

    #[test]
    fn an_agent_s_largest_honest_frame_fits_the_coordinator_s_bound() {
        // A SCAFFOLD reply: dense update and control delta, signed.
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        for d in [1usize, 4810, 300_000] {
            let params = |v: f32| {
                Parameters::new(vec![NamedTensor {
                    name: "layer.weight".into(),
                    shape: vec![d],
                    data: vec![v; d],
                }])
                .unwrap()
            };
            let reply = ToCoordinator::Trained(TrainReply {
                at: RoundRef {
                    job: JobId::from_bytes([7; 16]),
                    round: u32::MAX,
                },
                agent: tg_types::AgentId::numbered(usize::MAX),
                update: params(f32::MAX),
                num_examples: u64::MAX,
                train_loss: Some(f64::MAX),
                steps: u64::MAX,
                control_delta: Some(params(f32::MIN)),
                epsilon: Some(f64::MAX),
                compressed: None,
            });
            let frame = signed::seal(&key, u64::MAX, &reply).unwrap();
            assert!((frame.len() as u64) <= max_agent_frame(d), "{d}");
        }
    }

    fn request() -> ToAgent {
        ToAgent::Train(TrainRequest {
            at: RoundRef {
                job: JobId::from_bytes([7; 16]),
                round: 3,
            },
            global: Parameters::new(vec![NamedTensor {
                name: "w".into(),
                shape: vec![2],
                data: vec![1.5, -0.5],
            }])
            .unwrap(),
            config: TrainConfig {
                local_epochs: 1,
                batch_size: 32,
                learning_rate: 0.1,
                optimizer: OptimizerSpec::AdamW { weight_decay: 0.01 },
                dp_sgd: None,
                compress: Default::default(),
                adaptive_sparsity: false,
                deadline_ms: None,
            },
            objective: LocalObjective::Proximal { mu: 0.01 },
            secure: None,
        })
    }

    #[test]
    fn round_trip() {
        let m = request();
        let frame = encode(&m).unwrap();
        assert_eq!(decode::<ToAgent>(&frame).unwrap(), m);
    }

    #[test]
    fn rejects_trailing_bytes_and_other_versions() {
        let mut frame = encode(&request()).unwrap();
        frame.push(0);
        assert!(matches!(
            decode::<ToAgent>(&frame),
            Err(ProtoError::Malformed(_))
        ));
        let other = postcard::to_stdvec(&Envelope {
            version: 99,
            body: 1u8,
        })
        .unwrap();
        assert!(matches!(
            decode::<u8>(&other),
            Err(ProtoError::Version { got: 99 })
        ));
    }

    /// Found by the `proto_decode` fuzz target: an over-long varint inside an
    /// otherwise valid frame used to decode.
    #[test]
    fn overlong_varint_is_rejected() {
        let frame = [
            1, 1, 247, 177, 1, 255, 255, 0, 0, 0, 0, 0, 0, 0, 19, 247, 126, 136, 255, 191, 247, 0,
            0,
        ];
        assert!(decode::<ToAgent>(&frame).is_err());
        assert!(decode::<ToCoordinator>(&frame).is_err());
        // The same with a padded version number.
        let mut padded = encode(&request()).unwrap();
        padded.splice(0..1, [0x80 | PROTOCOL_VERSION as u8, 0x00]);
        assert!(matches!(
            decode::<ToAgent>(&padded),
            Err(ProtoError::NonCanonical)
        ));
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ToAgent>(&bytes);
            let _ = decode::<ToCoordinator>(&bytes);
        }

        #[test]
        fn truncation_is_an_error(cut in 0usize..40) {
            let frame = encode(&request()).unwrap();
            let cut = cut.min(frame.len() - 1);
            prop_assert!(decode::<ToAgent>(&frame[..cut]).is_err());
        }
    }
}
