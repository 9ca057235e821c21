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
const DOMAIN: &[u8] = b"tensorguard/signed-frame/v5\0";

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
    /// The payload is packed with zstd ([`tg_compress::download`]): only
    /// frames to agents are, and only [`open`] unpacks them.
    pub packed: bool,
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

/// Stage codes of the messages that carry a model to an agent.
pub mod stage {
    /// A training request (`ToAgent::Train`).
    pub const TRAIN: u8 = 4;
    /// An evaluation request (`ToAgent::Evaluate`).
    pub const EVALUATE: u8 = 6;
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
            Self::Train(r) => (r.at.job, r.at.round, stage::TRAIN),
            Self::Evaluate(r) => (r.at.job, r.at.round, stage::EVALUATE),
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
            Self::Sealed(r) => return Binding::trained(r.at),
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
    seal_wire(key, nonce, binding, payload, false)
}

/// Signs an encoded message that was packed with
/// [`tg_compress::download::pack`] (frames to agents only).
pub fn seal_packed(
    key: &SigningKey,
    nonce: u64,
    binding: Binding,
    packed: Vec<u8>,
) -> Result<Vec<u8>, ProtoError> {
    seal_wire(key, nonce, binding, packed, true)
}

fn seal_wire(
    key: &SigningKey,
    nonce: u64,
    binding: Binding,
    payload: Vec<u8>,
    packed: bool,
) -> Result<Vec<u8>, ProtoError> {
    let header = Header {
        binding,
        nonce,
        sender: key.verifying_key().to_bytes(),
        packed,
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
/// A packed payload is refused: only frames to agents are packed, and
/// [`open`] reads those.
pub fn open_payload<'a>(
    frame: &'a [u8],
    expected_sender: &[u8; 32],
) -> Result<(Header, &'a [u8]), ProtoError> {
    let (header, payload) = verify_frame(frame, expected_sender)?;
    if header.packed {
        return Err(packed_refused());
    }
    Ok((header, payload))
}

fn packed_refused() -> ProtoError {
    ProtoError::Malformed(
        "a packed payload where none is allowed (only an agent's admitted coordinator packs, and only models)".into(),
    )
}

/// Checks a frame's form and signature, and returns its header and raw
/// payload (packed or not) without decoding anything: a receiver checks
/// the header (sender, replay, job) before it spends memory on the payload,
/// then decodes with [`decode_verified`].
pub fn verify_frame<'a>(
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
    let message = decode_verified(&header, payload, 0)?;
    Ok((header, message))
}

/// Decodes the payload of a frame [`verify_frame`] accepted and checks that
/// the message is what the header says. A packed payload is unpacked only
/// if it is a training or evaluation request (the messages that carry a
/// model) and only into at most `unpack_limit` bytes; with `unpack_limit`
/// 0 a packed payload is refused.
pub fn decode_verified<T: Bound + Serialize + for<'de> Deserialize<'de>>(
    header: &Header,
    payload: &[u8],
    unpack_limit: usize,
) -> Result<T, ProtoError> {
    let message: T = if header.packed {
        let carries_model = [stage::TRAIN, stage::EVALUATE].contains(&header.binding.stage);
        if unpack_limit == 0 || !carries_model {
            return Err(packed_refused());
        }
        let unpacked = tg_compress::download::unpack(payload, unpack_limit)
            .map_err(|e| ProtoError::Malformed(e.to_string()))?;
        crate::decode(&unpacked)?
    } else {
        crate::decode(payload)?
    };
    if message.binding() != header.binding {
        return Err(ProtoError::BindingMismatch);
    }
    Ok(message)
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
mod tests;
