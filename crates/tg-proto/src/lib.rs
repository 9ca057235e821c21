//! Wire messages between a coordinator and its agents.
//!
//! Design decision: the in-process federation and the network federation carry
//! *the same bytes*. Every message is wrapped in an [`Envelope`] with a protocol
//! version and encoded with postcard (a compact, deterministic serde format),
//! so swapping the transport never changes the logic, and upload sizes measured
//! in process are the sizes a network would carry. Decoding is bounded:
//! [`decode`] refuses frames larger than [`MAX_FRAME_BYTES`] before parsing.

mod bytes;
mod decline;
mod join;
pub mod signed;

pub use decline::DeclineReason;
pub use join::{DataSchema, Dtype, JoinRequest, Offer};
pub use signed::{Binding, Bound, Header, NonceCounter, ReplayGuard};

use serde::{Deserialize, Serialize};
use tg_types::spec::{LocalObjective, TrainConfig};
use tg_types::{AgentId, JobId, Parameters};

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 5;

/// Largest frame [`decode`] accepts (256 MiB). Larger models are streamed in
/// chunks by the network transport.
pub const MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;

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

/// The public parameters of a secure-aggregation round, sent with the
/// training request so every participant builds the same round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecureRound {
    /// Participants in round order, with their Ed25519 identity keys.
    pub participants: Vec<(AgentId, [u8; 32])>,
    /// Bits per lane.
    pub bits: u32,
    /// L2 clipping norm of updates.
    pub clip: f64,
    /// Assumed fraction of clients colluding with the server.
    pub corrupt: f64,
    /// Assumed fraction of clients dropping out.
    pub dropout: f64,
    /// Public seed of the rotation.
    pub rotation_seed: [u8; 32],
    /// FedAvg weighting: each agent sends (w·update, w) with
    /// w = examples / `weight_scale`, so the sum gives the example-weighted
    /// mean. None: every agent weighs 1 (e.g. under DP-SGD, where the number
    /// of examples is private).
    pub weight_scale: Option<f64>,
    /// Shared random-k sparsification: the fraction of coordinates every
    /// agent sends this round (the same coordinates for all, drawn from
    /// `rotation_seed`); None sends them all.
    pub keep_fraction: Option<f64>,
    /// Distributed DP: every agent adds Skellam noise of this variance (in
    /// integer units) to each lane; None adds none.
    pub local_noise_variance: Option<f64>,
    /// The encoding is sized for this many clients (≥ the participants), so
    /// its scale — and the DP accounting — do not change with the sample.
    pub max_clients: Option<u32>,
    /// Honest agents refuse to unmask with fewer survivors than this.
    pub min_survivors: Option<u32>,
    /// Distributed DP: the encoding scale the privacy ledger charged for,
    /// pinned for every round of the job (None: the encoding's own).
    pub scale: Option<f64>,
    /// The mask generator (AES-128-CTR, or ChaCha20 for fleets without AES hardware).
    pub prg: tg_secagg::crypto::Prg,
}

impl SecureRound {
    /// The coordinates sent this round, ascending (all of them without
    /// sparsification). Public: derived from the round's seed.
    pub fn coordinates(&self, params: usize) -> Vec<usize> {
        match self.keep_fraction {
            Some(f) if f > 0.0 && f < 1.0 => {
                let k = ((f * params as f64).ceil() as usize).clamp(1, params);
                // Partial Fisher–Yates with a ChaCha20 stream domain-separated from the rotation.
                let mut seed = self.rotation_seed;
                seed[0] ^= 0x5a;
                let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed);
                let mut idx: Vec<usize> = (0..params).collect();
                for i in 0..k {
                    let j =
                        i + (rand_core::RngCore::next_u64(&mut rng) % (params - i) as u64) as usize;
                    idx.swap(i, j);
                }
                let mut chosen = idx[..k].to_vec();
                chosen.sort_unstable();
                chosen
            }
            _ => (0..params).collect(),
        }
    }

    /// Lanes per encoded vector for a model of `params` values: the sent
    /// coordinates of the weighted update, and the weight.
    pub fn dim_for(&self, params: usize) -> usize {
        self.coordinates(params).len() + 1
    }

    /// The protocol round and the update encoding every party derives from
    /// these public parameters, for encoded vectors of `dim` values.
    pub fn build(
        &self,
        at: RoundRef,
        dim: usize,
    ) -> Result<
        (
            std::sync::Arc<tg_secagg::RoundConfig>,
            tg_secagg::encode::Encoding,
        ),
        tg_secagg::SecAggError,
    > {
        let max_clients = self
            .max_clients
            .map_or(self.participants.len(), |m| m as usize);
        if max_clients < self.participants.len() {
            return Err(tg_secagg::SecAggError::Params(format!(
                "{} participants, but the encoding is sized for {max_clients}",
                self.participants.len()
            )));
        }
        let mut encoding = tg_secagg::encode::Encoding::new(
            dim,
            self.bits,
            self.clip,
            max_clients,
            self.local_noise_variance.unwrap_or(0.0).sqrt(),
            self.rotation_seed,
        )?;
        if let Some(scale) = self.scale {
            encoding = encoding.with_scale(scale)?;
        }
        // Seats come from the identities, not from the coordinator.
        let keys: Vec<[u8; 32]> = self.participants.iter().map(|(_, k)| *k).collect();
        tg_secagg::round::check_canonical_order(at.job.as_bytes(), at.round, &keys)?;
        let identities = self
            .participants
            .iter()
            .map(|(agent, key)| {
                ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| {
                    tg_secagg::SecAggError::Params(format!(
                        "identity key of {agent} is not a valid Ed25519 point"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ctx = tg_secagg::crypto::Context::new(*at.job.as_bytes(), at.round);
        // Everything else the round depends on (clipping, noise, encoding,
        // sparsification, weighting) is bound into the configuration's digest,
        // so two agents offered different parameters cannot complete a round.
        let offer = postcard::to_allocvec(&(self, dim as u64)).map_err(|e| {
            tg_secagg::SecAggError::Params(format!("cannot encode the round's parameters: {e}"))
        })?;
        let binding: [u8; 32] = tg_secagg::crypto::digest(b"tensorguard-secure-round", &offer);
        let cfg = tg_secagg::RoundConfig::new(
            ctx,
            identities,
            encoding.padded,
            self.bits,
            self.corrupt,
            self.dropout,
        )?
        .with_min_survivors(self.min_survivors.map_or(0, |m| m as usize))
        .with_prg(self.prg)
        .with_binding(binding);
        Ok((cfg, encoding))
    }

    /// Lists `participants` in the round's canonical order (by
    /// [`tg_secagg::round::position_key`]), as every agent checks.
    pub fn seat(at: RoundRef, participants: &mut [(AgentId, [u8; 32])]) {
        participants
            .sort_by_key(|(_, k)| tg_secagg::round::position_key(at.job.as_bytes(), at.round, k));
    }

    /// The round index of `agent`, if it takes part.
    pub fn index_of(&self, agent: &AgentId) -> Option<u32> {
        self.participants
            .iter()
            .position(|(a, _)| a == agent)
            .map(|i| i as u32)
    }
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
}

/// Request for an agent to evaluate a model on its local data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluateRequest {
    /// Round.
    pub at: RoundRef,
    /// Model to evaluate.
    pub model: Parameters,
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
    // postcard accepts over-long varints; insist on the one canonical form.
    if encode(&body)? != frame {
        return Err(ProtoError::NonCanonical);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tg_types::NamedTensor;
    use tg_types::spec::OptimizerSpec;

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
