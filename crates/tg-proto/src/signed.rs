//! Signed frames: every application message on the network is signed by its
//! sender's Ed25519 identity and bound to (job, round, stage, nonce).
//!
//! Design decision: the signature covers a domain tag, the binding header,
//! the sender's key and the SHA-512 digest of the exact payload bytes (which
//! [`crate::decode`] insists are canonical). Signing the digest lets a
//! receiver verify a large frame without building a second copy of it, and
//! [`open_payload`] hands back the payload as a slice of the frame. After verifying, the receiver decodes the payload
//! and checks that the message *is* what the header says — same job, same
//! round, same stage — so a valid message cannot be relabelled. Nonces are
//! strictly increasing per sender (a counter started at the sender's clock in
//! microseconds, so they keep increasing across restarts); a receiver keeps
//! the last nonce per sender and refuses anything not newer. Together these
//! reject replays within a job, across rounds and across jobs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use tg_types::JobId;

use crate::{ProtoError, ToAgent, ToCoordinator};

/// Domain separation tag of frame signatures.
const DOMAIN: &[u8] = b"tensorguard/signed-frame/v4\0";

/// What a signed frame is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Binding {
    /// Job.
    pub job: JobId,
    /// Round (0 before the first round: offers and joins).
    pub round: u32,
    /// Message kind and protocol stage (see [`Bound::binding`]).
    pub stage: u8,
}

/// The signed header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// What the message is bound to.
    pub binding: Binding,
    /// Strictly increasing per sender.
    pub nonce: u64,
    /// The sender's Ed25519 public key.
    pub sender: [u8; 32],
}

#[derive(Serialize)]
struct Wire {
    header: Header,
    #[serde(with = "tg_types::view::bytes_owned")]
    payload: Vec<u8>,
    #[serde(with = "tg_types::view::bytes_owned")]
    signature: Vec<u8>,
}

/// [`Wire`] as read: the payload and signature stay in the frame.
#[derive(Serialize, Deserialize)]
struct WireRef<'a> {
    header: Header,
    #[serde(borrow, with = "tg_types::view::bytes_borrowed")]
    payload: &'a [u8],
    #[serde(borrow, with = "tg_types::view::bytes_borrowed")]
    signature: &'a [u8],
}

impl Binding {
    /// The binding of a training reply for `at`.
    pub fn trained(at: crate::RoundRef) -> Self {
        Self {
            job: at.job,
            round: at.round,
            stage: 5,
        }
    }
}

/// Messages that know their binding.
pub trait Bound {
    /// The (job, round, stage) the message belongs to.
    fn binding(&self) -> Binding;
}

fn secagg_client_stage(s: tg_secagg::messages::Stage) -> u8 {
    use tg_secagg::messages::Stage;
    match s {
        Stage::AdvertiseKeys => 16,
        Stage::ShareKeys => 17,
        Stage::MaskedInput => 18,
        Stage::ConsistencyCheck => 19,
        Stage::Unmask => 20,
    }
}

impl Bound for ToAgent {
    fn binding(&self) -> Binding {
        use tg_secagg::messages::ServerBody;
        let (job, round, stage) = match self {
            Self::Offer(o) => (o.job, 0, 1),
            Self::Welcome { job } => (*job, 0, 2),
            Self::Refused { job, .. } => (*job, 0, 3),
            Self::Train(r) => (r.at.job, r.at.round, 4),
            Self::Evaluate(r) => (r.at.job, r.at.round, 6),
            Self::Finished { job } => (*job, 0, 9),
            Self::SecAgg(m) => {
                let stage = match &m.body {
                    ServerBody::NeighbourKeys(_) => 32,
                    ServerBody::SharesForYou(_) => 33,
                    ServerBody::Survivors(_) => 34,
                    ServerBody::SurvivorSignatures(_) => 35,
                    _ => 47,
                };
                (m.at.job, m.at.round, stage)
            }
        };
        Binding { job, round, stage }
    }
}

impl Bound for ToCoordinator {
    fn binding(&self) -> Binding {
        let (job, round, stage) = match self {
            Self::Join(j) => (j.job, 0, 10),
            Self::Trained(r) => return Binding::trained(r.at),
            Self::Evaluated(r) => (r.at.job, r.at.round, 7),
            Self::Declined { at, .. } => (at.job, at.round, 8),
            Self::SecAgg(m) => (
                m.at.job,
                m.at.round,
                secagg_client_stage(m.msg.body.stage()),
            ),
        };
        Binding { job, round, stage }
    }
}

/// A sender's nonce counter.
#[derive(Debug)]
pub struct NonceCounter(AtomicU64);

impl NonceCounter {
    /// Starts at the current time in microseconds since the Unix epoch.
    pub fn from_clock() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Self(AtomicU64::new(now))
    }

    /// The next nonce.
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Encodes `message`, signs it and wraps it in a signed frame.
pub fn seal<T: Bound + Serialize>(
    key: &SigningKey,
    nonce: u64,
    message: &T,
) -> Result<Vec<u8>, ProtoError> {
    let payload = crate::encode(message)?;
    seal_payload(key, nonce, message.binding(), payload)
}

/// Signs already-encoded `payload` under `binding`.
pub fn seal_payload(
    key: &SigningKey,
    nonce: u64,
    binding: Binding,
    payload: Vec<u8>,
) -> Result<Vec<u8>, ProtoError> {
    let header = Header {
        binding,
        nonce,
        sender: key.verifying_key().to_bytes(),
    };
    let signature = key
        .sign(&signed_bytes(&header, &payload)?)
        .to_bytes()
        .to_vec();
    crate::encode(&Wire {
        header,
        payload,
        signature,
    })
}

/// What a signature covers: the domain tag, the header, and the payload's
/// SHA-512 digest (so no copy of a large payload is built to verify it).
fn signed_bytes(header: &Header, payload: &[u8]) -> Result<Vec<u8>, ProtoError> {
    use sha2::Digest;
    let head = postcard::to_stdvec(header).map_err(|e| ProtoError::Encode(e.to_string()))?;
    let mut m = Vec::with_capacity(DOMAIN.len() + head.len() + 64);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&head);
    m.extend_from_slice(&sha2::Sha512::digest(payload));
    Ok(m)
}

/// Verifies a signed frame from `expected_sender` and returns its header
/// and its payload, a slice of `frame` (not yet decoded: decode it with
/// [`crate::decode`], or read a training reply in place with
/// [`crate::decode_trained`], and check it against the header's binding).
pub fn open_payload<'a>(
    frame: &'a [u8],
    expected_sender: &[u8; 32],
) -> Result<(Header, &'a [u8]), ProtoError> {
    if frame.len() > crate::MAX_FRAME_BYTES {
        return Err(ProtoError::FrameTooLarge(frame.len()));
    }
    let malformed = |e: postcard::Error| ProtoError::Malformed(e.to_string());
    let (version, rest): (u16, &[u8]) = postcard::take_from_bytes(frame).map_err(malformed)?;
    if version != crate::PROTOCOL_VERSION {
        return Err(ProtoError::Version { got: version });
    }
    let (wire, rest): (WireRef<'a>, &[u8]) = postcard::take_from_bytes(rest).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes after the frame",
            rest.len()
        )));
    }
    if !crate::is_canonical(&wire, frame)? {
        return Err(ProtoError::NonCanonical);
    }
    if wire.header.sender != *expected_sender {
        return Err(ProtoError::WrongSender);
    }
    let key =
        VerifyingKey::from_bytes(&wire.header.sender).map_err(|_| ProtoError::BadSignature)?;
    let signature: [u8; 64] = wire
        .signature
        .try_into()
        .map_err(|_| ProtoError::BadSignature)?;
    key.verify_strict(
        &signed_bytes(&wire.header, wire.payload)?,
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .map_err(|_| ProtoError::BadSignature)?;
    Ok((wire.header, wire.payload))
}

/// Verifies a signed frame from `expected_sender` and decodes its message,
/// checking that the message is what its signed header says.
pub fn open<T: Bound + Serialize + for<'de> Deserialize<'de>>(
    frame: &[u8],
    expected_sender: &[u8; 32],
) -> Result<(Header, T), ProtoError> {
    let (header, payload) = open_payload(frame, expected_sender)?;
    let message: T = crate::decode(payload)?;
    if message.binding() != header.binding {
        return Err(ProtoError::BindingMismatch);
    }
    Ok((header, message))
}

/// A verified frame from an agent, decoded once.
#[derive(Debug)]
pub enum FromAgent {
    /// A training reply: its payload is `frame[range]`, left for the
    /// receiver to read in place ([`crate::decode_trained`] applies every
    /// check on it); its round already matches the signed header.
    Trained(std::ops::Range<usize>),
    /// Any other message, decoded and matched against the signed header.
    Message(ToCoordinator),
}

/// Verifies a frame from `expected_sender` and decodes it once: a training
/// reply stays in the frame (only its round is read, to match the signed
/// header), anything else is decoded.
pub fn open_from_agent(
    frame: &[u8],
    expected_sender: &[u8; 32],
) -> Result<(Header, FromAgent), ProtoError> {
    let (header, payload) = open_payload(frame, expected_sender)?;
    let opened = read_from_agent(frame, &header, payload)?;
    Ok((header, opened))
}

/// The second half of [`open_from_agent`], for a receiver that checks who
/// may send what (a peer that has not joined may send only a join) before
/// decoding: `payload` is the verified payload [`open_payload`] returned
/// for `frame` and `header`.
pub fn read_from_agent(
    frame: &[u8],
    header: &Header,
    payload: &[u8],
) -> Result<FromAgent, ProtoError> {
    if let Some(at) = crate::trained_at(payload) {
        if Binding::trained(at) != header.binding {
            return Err(ProtoError::BindingMismatch);
        }
        let start = (payload.as_ptr() as usize)
            .checked_sub(frame.as_ptr() as usize)
            .filter(|s| s + payload.len() <= frame.len())
            .ok_or_else(|| ProtoError::Malformed("the payload is not part of the frame".into()))?;
        return Ok(FromAgent::Trained(start..start + payload.len()));
    }
    let message: ToCoordinator = crate::decode(payload)?;
    if message.binding() != header.binding {
        return Err(ProtoError::BindingMismatch);
    }
    Ok(FromAgent::Message(message))
}

/// Whether a payload is a join request, read from its first bytes only:
/// what a receiver may accept from a peer that has not joined, before
/// decoding anything else it sent.
pub fn is_join(payload: &[u8]) -> bool {
    let Ok((version, rest)) = postcard::take_from_bytes::<u16>(payload) else {
        return false;
    };
    version == crate::PROTOCOL_VERSION
        && postcard::take_from_bytes::<u32>(rest).is_ok_and(|(variant, _)| variant == 0)
}

/// Refuses nonces that are not newer than the last one seen per sender.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    last: HashMap<[u8; 32], u64>,
}

impl ReplayGuard {
    /// Accepts `header` if its nonce is newer than any before from its
    /// sender, and remembers it.
    pub fn check(&mut self, header: &Header) -> Result<(), ProtoError> {
        let last = self.last.entry(header.sender).or_insert(0);
        if header.nonce <= *last {
            return Err(ProtoError::Replay {
                nonce: header.nonce,
                last: *last,
            });
        }
        *last = header.nonce;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JoinRequest, RoundRef};
    use proptest::prelude::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    fn join(job: u8) -> ToCoordinator {
        ToCoordinator::Join(JoinRequest {
            job: JobId::from_bytes([job; 16]),
            name: "robot-7".into(),
            token: Some("tok".into()),
            evidence: None,
            certificate: None,
        })
    }

    #[test]
    fn known_answer_header_bytes() {
        // The signed bytes are the domain tag, the postcard header and the
        // payload: pin the header's encoding so a serde change cannot
        // silently change what signatures cover.
        let h = Header {
            binding: Binding {
                job: JobId::from_bytes([1; 16]),
                round: 3,
                stage: 18,
            },
            nonce: 300,
            sender: [2; 32],
        };
        let bytes = signed_bytes(&h, b"xy").unwrap();
        let mut expected = DOMAIN.to_vec();
        expected.extend([1u8; 16]);
        expected.extend([3, 18, 0xac, 0x02]);
        expected.extend([2u8; 32]);
        use sha2::Digest;
        expected.extend(sha2::Sha512::digest(b"xy"));
        assert_eq!(bytes, expected);
    }

    #[test]
    fn round_trip_and_replay() {
        let k = key(1);
        let pk = k.verifying_key().to_bytes();
        let nonces = NonceCounter::from_clock();
        let frame = seal(&k, nonces.next(), &join(5)).unwrap();
        let (header, msg): (Header, ToCoordinator) = open(&frame, &pk).unwrap();
        assert_eq!(msg, join(5));
        assert_eq!(header.binding.job, JobId::from_bytes([5; 16]));
        let mut guard = ReplayGuard::default();
        guard.check(&header).unwrap();
        assert!(matches!(
            guard.check(&header),
            Err(ProtoError::Replay { .. })
        ));
        let (newer, _): (Header, ToCoordinator) =
            open(&seal(&k, nonces.next(), &join(5)).unwrap(), &pk).unwrap();
        guard.check(&newer).unwrap();
    }

    #[test]
    fn refuses_forgery_other_senders_and_relabelling() {
        let k = key(1);
        let pk = k.verifying_key().to_bytes();
        let mut frame = seal(&k, 9, &join(5)).unwrap();
        // Another identity's frame is refused even though it verifies.
        let other = seal(&key(2), 9, &join(5)).unwrap();
        assert!(matches!(
            open::<ToCoordinator>(&other, &pk),
            Err(ProtoError::WrongSender)
        ));
        // A flipped payload byte breaks the signature.
        let n = frame.len();
        frame[n - 70] ^= 1;
        assert!(open::<ToCoordinator>(&frame, &pk).is_err());
        // A correctly signed header that lies about its message.
        let payload = crate::encode(&join(5)).unwrap();
        let lie = Binding {
            job: JobId::from_bytes([6; 16]),
            round: 0,
            stage: 10,
        };
        let relabelled = seal_payload(&k, 10, lie, payload).unwrap();
        assert!(matches!(
            open::<ToCoordinator>(&relabelled, &pk),
            Err(ProtoError::BindingMismatch)
        ));
    }

    #[test]
    fn rounds_and_stages_are_bound() {
        let declined = ToCoordinator::Declined {
            at: RoundRef {
                job: JobId::from_bytes([5; 16]),
                round: 4,
            },
            agent: tg_types::AgentId::new("a").unwrap(),
            reason: crate::DeclineReason::TrainingFailed,
        };
        let b = declined.binding();
        assert_eq!((b.round, b.stage), (4, 8));
        assert_ne!(join(5).binding(), b);
    }

    fn trained(round: u32) -> ToCoordinator {
        ToCoordinator::Trained(crate::TrainReply {
            at: RoundRef {
                job: JobId::from_bytes([5; 16]),
                round,
            },
            agent: tg_types::AgentId::new("a").unwrap(),
            update: tg_types::Parameters::new(vec![tg_types::NamedTensor {
                name: "w".into(),
                shape: vec![3],
                data: vec![1.0, 2.0, 3.0],
            }])
            .unwrap(),
            num_examples: 4,
            train_loss: None,
            steps: 1,
            control_delta: None,
            epsilon: None,
            compressed: None,
        })
    }

    #[test]
    fn a_training_reply_stays_in_its_frame_and_cannot_be_relabelled() {
        let k = key(1);
        let pk = k.verifying_key().to_bytes();
        let frame = seal(&k, 7, &trained(4)).unwrap();
        let (header, opened) = open_from_agent(&frame, &pk).unwrap();
        assert_eq!(header.binding.round, 4);
        let FromAgent::Trained(range) = opened else {
            panic!("a training reply is left in place");
        };
        // The payload is the exact message, read in place.
        let view = crate::decode_trained(&frame[range]).unwrap().unwrap();
        assert_eq!(view.num_examples, 4);
        // Signed for round 3, carrying round 4's reply: refused.
        let payload = crate::encode(&trained(4)).unwrap();
        let lie = Binding::trained(RoundRef {
            job: JobId::from_bytes([5; 16]),
            round: 3,
        });
        let relabelled = seal_payload(&k, 8, lie, payload.clone()).unwrap();
        assert!(matches!(
            open_from_agent(&relabelled, &pk),
            Err(ProtoError::BindingMismatch)
        ));
        // Signed as a decline (another stage) for the same round: refused.
        let as_decline = Binding {
            stage: 8,
            ..Binding::trained(RoundRef {
                job: JobId::from_bytes([5; 16]),
                round: 4,
            })
        };
        let relabelled = seal_payload(&k, 9, as_decline, payload).unwrap();
        assert!(open_from_agent(&relabelled, &pk).is_err());
        // Other messages are decoded and matched as before.
        let (_, opened) = open_from_agent(&seal(&k, 10, &join(5)).unwrap(), &pk).unwrap();
        assert!(matches!(opened, FromAgent::Message(ToCoordinator::Join(_))));
    }

    #[test]
    fn only_a_join_is_read_from_a_stranger() {
        assert!(is_join(&crate::encode(&join(5)).unwrap()));
        assert!(!is_join(&crate::encode(&trained(1)).unwrap()));
        let decline = ToCoordinator::Declined {
            at: RoundRef {
                job: JobId::from_bytes([5; 16]),
                round: 1,
            },
            agent: tg_types::AgentId::new("a").unwrap(),
            reason: crate::DeclineReason::TrainingFailed,
        };
        assert!(!is_join(&crate::encode(&decline).unwrap()));
        assert!(!is_join(&[]));
        assert!(!is_join(&[0xff]));
    }

    proptest! {
        #[test]
        fn open_from_agent_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = open_from_agent(&bytes, &[0; 32]);
            let _ = crate::trained_at(&bytes);
        }

        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = open::<ToCoordinator>(&bytes, &[0; 32]);
            let _ = open::<ToAgent>(&bytes, &[0; 32]);
        }
    }
}
