//! A training reply read in place: the update's values stay in the frame.
//!
//! The coordinator folds an update straight from the bytes it received
//! ([`decode_trained`]), so a round holds one frame at a time and no decoded
//! copy of it. The view serializes exactly as [`TrainReply`] does (a test
//! holds them to it), and the same canonical-encoding rule applies.

use serde::{Deserialize, Serialize};
use tg_types::AgentId;
use tg_types::view::ParametersView;

#[cfg(doc)]
use crate::TrainReply;
use crate::{MAX_FRAME_BYTES, PROTOCOL_VERSION, ProtoError, RoundRef, is_canonical};

/// [`TrainReply`], borrowing the update's values from the frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReplyView<'a> {
    /// Round.
    pub at: RoundRef,
    /// Sender.
    pub agent: AgentId,
    /// `local − global`.
    #[serde(borrow)]
    pub update: ParametersView<'a>,
    /// Aggregation weight.
    pub num_examples: u64,
    /// Mean training loss, if released.
    pub train_loss: Option<f64>,
    /// Optimizer steps taken.
    pub steps: u64,
    /// SCAFFOLD's control-variate change.
    #[serde(borrow)]
    pub control_delta: Option<ParametersView<'a>>,
    /// ε the agent reports having spent.
    pub epsilon: Option<f64>,
    /// The update, compressed (then `update` is empty).
    #[serde(borrow)]
    pub compressed: Option<tg_compress::CompressedView<'a>>,
}

/// `ToCoordinator`'s variant index of `Trained` on the wire.
const TRAINED: u32 = 1;

/// Reads a frame that carries `ToCoordinator::Trained` without copying the
/// update; `Ok(None)` for any other message (decode it with [`crate::decode`]).
/// The same checks as [`crate::decode`]: size, version, whole frame consumed,
/// canonical encoding, and every tensor's length against its shape.
pub fn decode_trained(frame: &[u8]) -> Result<Option<TrainReplyView<'_>>, ProtoError> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(ProtoError::FrameTooLarge(frame.len()));
    }
    let malformed = |e: postcard::Error| ProtoError::Malformed(e.to_string());
    let (version, rest): (u16, &[u8]) = postcard::take_from_bytes(frame).map_err(malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(ProtoError::Version { got: version });
    }
    let (variant, rest): (u32, &[u8]) = postcard::take_from_bytes(rest).map_err(malformed)?;
    if variant != TRAINED {
        return Ok(None);
    }
    let (reply, rest): (TrainReplyView<'_>, &[u8]) =
        postcard::take_from_bytes(rest).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    /// Serializes as `ToCoordinator::Trained(reply)` does.
    #[derive(Serialize)]
    enum AsSent<'r, 'a> {
        #[allow(dead_code)]
        Join(()),
        Trained(&'r TrainReplyView<'a>),
    }
    if !is_canonical(&AsSent::Trained(&reply), frame)? {
        return Err(ProtoError::NonCanonical);
    }
    for p in std::iter::once(&reply.update).chain(&reply.control_delta) {
        p.check_shapes()
            .map_err(|e| ProtoError::Malformed(e.to_string()))?;
    }
    if let Some(c) = &reply.compressed {
        if !reply.update.tensors.is_empty() {
            return Err(ProtoError::Malformed(
                "a reply carries both a dense and a compressed update".into(),
            ));
        }
        c.check().map_err(ProtoError::Malformed)?;
    }
    Ok(Some(reply))
}

/// The round a payload says it is a training reply for, read from its
/// first bytes only (`None` for any other message, or bytes too short to
/// say). For checking a signed header's binding before the reply is read in
/// full by [`decode_trained`], which applies every other check.
pub fn trained_at(payload: &[u8]) -> Option<RoundRef> {
    let (version, rest): (u16, &[u8]) = postcard::take_from_bytes(payload).ok()?;
    if version != PROTOCOL_VERSION {
        return None;
    }
    let (variant, rest): (u32, &[u8]) = postcard::take_from_bytes(rest).ok()?;
    if variant != TRAINED {
        return None;
    }
    let (at, _): (RoundRef, &[u8]) = postcard::take_from_bytes(rest).ok()?;
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ToCoordinator, TrainReply, decode, encode};
    use proptest::prelude::*;
    use tg_types::view::Lanes;
    use tg_types::{JobId, NamedTensor, Parameters};

    fn params(vals: Vec<f32>) -> Parameters {
        Parameters::new(vec![NamedTensor {
            name: "w".into(),
            shape: vec![vals.len()],
            data: vals,
        }])
        .unwrap()
    }

    proptest! {
        #[test]
        fn the_view_reads_what_the_full_decoder_reads(
            vals in proptest::collection::vec(any::<f32>(), 0..40),
            n in any::<u64>(),
            control in any::<bool>(),
            loss in proptest::option::of(any::<f64>()),
        ) {
            let reply = TrainReply {
                at: RoundRef { job: JobId::from_bytes([3; 16]), round: 9 },
                agent: AgentId::numbered(4),
                update: params(vals.clone()),
                num_examples: n,
                train_loss: loss,
                steps: 2,
                control_delta: control.then(|| params(vals.clone())),
                epsilon: None,
                compressed: None,
            };
            let frame = encode(&ToCoordinator::Trained(reply.clone())).unwrap();
            let view = decode_trained(&frame).unwrap().unwrap();
            prop_assert!(view.update.lanes().map(f32::to_bits).eq(reply.update.values().map(f32::to_bits)));
            prop_assert_eq!(view.num_examples, n);
            prop_assert_eq!(view.control_delta.is_some(), control);
            prop_assert_eq!(view.agent, reply.agent.clone());
            // Every strict prefix is refused, never read past.
            for cut in [0, 1, frame.len() / 2, frame.len().saturating_sub(1)] {
                if cut < frame.len() {
                    prop_assert!(decode_trained(&frame[..cut]).is_err());
                }
            }
            let full: ToCoordinator = decode(&frame).unwrap();
            prop_assert!(matches!(full, ToCoordinator::Trained(_)));
        }
    }

    #[test]
    fn other_messages_are_left_to_the_full_decoder() {
        let frame = encode(&ToCoordinator::Declined {
            at: RoundRef {
                job: JobId::from_bytes([1; 16]),
                round: 1,
            },
            agent: AgentId::numbered(0),
            reason: crate::DeclineReason::RoundReplayed,
        })
        .unwrap();
        assert_eq!(decode_trained(&frame).unwrap(), None);
    }

    #[test]
    fn a_tensor_longer_than_its_shape_or_a_padded_frame_is_refused() {
        let view = TrainReplyView {
            at: RoundRef {
                job: JobId::from_bytes([1; 16]),
                round: 1,
            },
            agent: AgentId::numbered(0),
            update: ParametersView {
                tensors: vec![tg_types::view::TensorView {
                    name: "w".into(),
                    shape: vec![1],
                    data: &[0; 8],
                }],
            },
            num_examples: 1,
            train_loss: None,
            steps: 1,
            control_delta: None,
            epsilon: None,
            compressed: None,
        };
        #[derive(Serialize)]
        enum AsSent<'r, 'a> {
            #[allow(dead_code)]
            Join(()),
            Trained(&'r TrainReplyView<'a>),
        }
        let frame = encode(&AsSent::Trained(&view)).unwrap();
        assert!(matches!(
            decode_trained(&frame),
            Err(ProtoError::Malformed(_))
        ));
        let mut padded = frame.clone();
        padded.push(0);
        assert!(decode_trained(&padded).is_err());
    }

    #[test]
    fn a_frame_of_empty_tensors_is_refused_as_it_is_counted() {
        use tg_types::view::{MAX_RANK, MAX_TENSORS, ParametersView, TensorView};
        // An admitted agent (or, towards agents, a coordinator) sends a
        // parameter set of more empty tensors than any model has: each is a
        // few bytes on the wire and would be dozens in memory.
        let many = ParametersView {
            tensors: (0..=MAX_TENSORS)
                .map(|_| TensorView {
                    name: String::new(),
                    shape: Vec::new(),
                    data: &[],
                })
                .collect(),
        };
        let reply = TrainReplyView {
            at: RoundRef {
                job: JobId::from_bytes([1; 16]),
                round: 1,
            },
            agent: tg_types::AgentId::new("a").unwrap(),
            update: many,
            num_examples: 1,
            train_loss: None,
            steps: 1,
            control_delta: None,
            epsilon: None,
            compressed: None,
        };
        #[derive(serde::Serialize)]
        enum AsSent<'r, 'a> {
            #[allow(dead_code)]
            Join(()),
            Trained(&'r TrainReplyView<'a>),
        }
        let frame = encode(&AsSent::Trained(&reply)).unwrap();
        // (postcard reports any refusal by a decoder as a serde error.)
        assert!(matches!(
            decode_trained(&frame),
            Err(ProtoError::Malformed(_))
        ));
        // The full decoder refuses it the same way.
        assert!(decode::<ToCoordinator>(&frame).is_err());
        // A shape of more dimensions than any tensor has: refused.
        let mut deep = reply.clone();
        deep.update = ParametersView {
            tensors: vec![TensorView {
                name: "w".into(),
                shape: vec![1; MAX_RANK + 1],
                data: &[0, 0, 0, 0],
            }],
        };
        let frame = encode(&AsSent::Trained(&deep)).unwrap();
        assert!(decode_trained(&frame).is_err());
        // Constructing such a set is refused where its owner can be told.
        let tensors = (0..=MAX_TENSORS)
            .map(|i| NamedTensor {
                name: format!("t{i}"),
                shape: vec![0],
                data: vec![],
            })
            .collect();
        assert!(Parameters::new(tensors).is_err());
    }

    #[test]
    fn an_evaluation_reply_of_more_tasks_than_allowed_is_refused_as_it_is_counted() {
        use tg_types::record::{MAX_EVALUATED_TASKS, TaskSuccesses};
        // Any admitted agent can send an evaluation reply: a million
        // empty task entries are three bytes each on the wire and forty
        // in memory.
        let reply = |n: usize| {
            ToCoordinator::Evaluated(crate::EvaluateReply {
                at: RoundRef {
                    job: JobId::from_bytes([1; 16]),
                    round: 1,
                },
                agent: tg_types::AgentId::new("a").unwrap(),
                num_examples: n as u64,
                loss: 0.0,
                accuracy: 0.0,
                baseline: None,
                tasks: (0..n)
                    .map(|_| TaskSuccesses {
                        task: String::new(),
                        successes: 0,
                        episodes: 1,
                    })
                    .collect(),
            })
        };
        let ok = encode(&reply(MAX_EVALUATED_TASKS)).unwrap();
        assert!(decode::<ToCoordinator>(&ok).is_ok());
        for n in [MAX_EVALUATED_TASKS + 1, 1_000_000] {
            let frame = encode(&reply(n)).unwrap();
            assert!(
                matches!(
                    decode::<ToCoordinator>(&frame),
                    Err(ProtoError::Malformed(_))
                ),
                "{n} tasks"
            );
        }
    }
}
