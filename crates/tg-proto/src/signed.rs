//! Signed frames: every application message on the network is signed by its
//! sender's Ed25519 identity and bound to (job, round, stage, nonce).
//!
//! Design decision: the signature covers a domain tag, the binding header,
//! the sender's key and the exact payload bytes (which [`crate::decode`]
//! insists are canonical). After verifying, the receiver decodes the payload
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
const DOMAIN: &[u8] = b"tensorguard/signed-frame/v3\0";

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

#[derive(Serialize, Deserialize)]
struct Wire {
    header: Header,
    #[serde(with = "tg_types::view::bytes_owned")]
    payload: Vec<u8>,
    #[serde(with = "tg_types::view::bytes_owned")]
    signature: Vec<u8>,
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
            Self::Trained(r) => (r.at.job, r.at.round, 5),
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

fn signed_bytes(header: &Header, payload: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let head = postcard::to_stdvec(header).map_err(|e| ProtoError::Encode(e.to_string()))?;
    let mut m = Vec::with_capacity(DOMAIN.len() + head.len() + payload.len());
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(&head);
    m.extend_from_slice(payload);
    Ok(m)
}

/// Verifies a signed frame from `expected_sender` and decodes its message,
/// checking that the message is what its signed header says.
pub fn open<T: Bound + Serialize + for<'de> Deserialize<'de>>(
    frame: &[u8],
    expected_sender: &[u8; 32],
) -> Result<(Header, T), ProtoError> {
    let wire: Wire = crate::decode(frame)?;
    if wire.header.sender != *expected_sender {
        return Err(ProtoError::WrongSender);
    }
    let key =
        VerifyingKey::from_bytes(&wire.header.sender).map_err(|_| ProtoError::BadSignature)?;
    let signature: [u8; 64] = wire
        .signature
        .as_slice()
        .try_into()
        .map_err(|_| ProtoError::BadSignature)?;
    key.verify_strict(
        &signed_bytes(&wire.header, &wire.payload)?,
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .map_err(|_| ProtoError::BadSignature)?;
    let message: T = crate::decode(&wire.payload)?;
    if message.binding() != wire.header.binding {
        return Err(ProtoError::BindingMismatch);
    }
    Ok((wire.header, message))
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
        expected.extend(b"xy");
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

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = open::<ToCoordinator>(&bytes, &[0; 32]);
            let _ = open::<ToAgent>(&bytes, &[0; 32]);
        }
    }
}
