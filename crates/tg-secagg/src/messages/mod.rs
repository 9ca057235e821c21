//! Protocol messages, and the signatures that bind them to a round.
//!
//! Design decision: every client message travels in a [`Signed`] envelope:
//! an Ed25519 signature by the client's identity over a domain tag, the
//! round's [`Context`] (job, round and the digest of the round's whole
//! configuration), the stage, the sender and the body's canonical (postcard)
//! bytes. A message from another job, round, stage or configuration, or with
//! a different sender, fails verification — replays, cross-stage reuse and
//! equivocated configurations are rejected by construction. Framing on the wire is the transport's job; this
//! module only defines the bodies.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tg_types::view::bounded::per_participant;

use crate::SecAggError;
use crate::crypto::Context;
use crate::shamir::Share;

const DOMAIN: &[u8] = b"tensorguard-secagg-msg-v1";

/// Protocol stages, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    /// Clients advertise their two public keys.
    AdvertiseKeys,
    /// Clients send sealed Shamir shares to their neighbours.
    ShareKeys,
    /// Clients send their masked input.
    MaskedInput,
    /// Clients sign the survivor set they were told.
    ConsistencyCheck,
    /// Clients reveal the shares the server needs to unmask.
    Unmask,
}

/// Stage 1: a client's X25519 public keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertiseKeys {
    /// Key for sealing shares to this client.
    pub share_key: [u8; 32],
    /// Key for pairwise mask agreement.
    pub mask_key: [u8; 32],
}

/// A sealed share pair for one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Recipient.
    pub to: u32,
    /// ChaCha20-Poly1305 ciphertext: nonce, body and tag, so never shorter
    /// than [`MIN_SEALED`] bytes — refused while decoded if it is, which
    /// keeps a list of sealed pairs from costing many times its wire size.
    #[serde(serialize_with = "bytes::serialize", deserialize_with = "sealed_bytes")]
    pub ciphertext: Vec<u8>,
}

/// The shortest sealed message: its nonce and its authentication tag.
pub const MIN_SEALED: usize = crate::crypto::NONCE_LEN + 16;

fn sealed_bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let v = bytes::deserialize(d)?;
    if v.len() < MIN_SEALED {
        return Err(serde::de::Error::custom(format!(
            "a sealed share of {} bytes, shorter than its nonce and tag",
            v.len()
        )));
    }
    Ok(v)
}

/// Stage 2: shares of the sender's self-mask seed and mask secret key,
/// sealed to each recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareKeys {
    /// One sealed pair per recipient.
    #[serde(deserialize_with = "per_participant")]
    pub sealed: Vec<Sealed>,
}

/// Stage 3: the masked input, B bits per lane, packed, with the sender's
/// signed commitment to the neighbours it masked with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    /// `y mod 2^B`, bit-packed little-endian.
    #[serde(with = "bytes")]
    pub packed: Vec<u8>,
    /// A [`MaskCommitment`], signed on its own so the server can forward it
    /// to the sender's neighbours without the vector. Its own type, which
    /// cannot hold another message: a body nested in itself would let any
    /// peer overflow the decoder's stack with a small frame.
    pub commitment: Box<SignedCommitment>,
}

/// A [`MaskCommitment`] with its sender's signature: exactly the
/// [`Signed`] message `ClientBody::MaskCommitment(commitment)` (the same
/// signature covers it), in a type that cannot nest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommitment {
    /// Sender's index in the round.
    pub from: u32,
    /// The neighbours masked with.
    pub commitment: MaskCommitment,
    /// Ed25519 signature of the equivalent [`Signed`] message.
    #[serde(with = "sig64")]
    pub signature: [u8; 64],
}

impl SignedCommitment {
    /// From a signed `ClientBody::MaskCommitment`; None for any other body.
    pub fn from_signed(s: Signed) -> Option<Self> {
        match s.body {
            ClientBody::MaskCommitment(commitment) => Some(Self {
                from: s.from,
                commitment,
                signature: s.signature,
            }),
            _ => None,
        }
    }

    /// The signed message it stands for (to verify or forward).
    pub fn to_signed(&self) -> Signed {
        Signed {
            from: self.from,
            body: ClientBody::MaskCommitment(self.commitment.clone()),
            signature: self.signature,
        }
    }
}

/// The neighbours a client masked its input with. Its neighbours reveal
/// shares of its self-mask seed only for a survivor set that keeps at least
/// `t` of these and lists no other neighbour of it: a server cannot declare
/// a survivor's masking neighbours dropped to strip its mask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskCommitment {
    /// Sorted round indices of the neighbours masked with.
    #[serde(deserialize_with = "increasing_indices")]
    pub masked_with: Vec<u32>,
}

/// Stage 4: the sender's signature over the survivor set (the envelope's
/// signature is it; the body repeats the set so it can be checked).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyCheck {
    /// The survivor set the server sent, sorted.
    #[serde(deserialize_with = "per_participant")]
    pub survivors: Vec<u32>,
}

/// Stage 5: for each neighbour that survived, a share of its self-mask
/// seed; for each that dropped after sharing, a share of its mask key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unmask {
    /// `(owner, share of owner's self-mask seed)` for owners in the survivor set.
    #[serde(deserialize_with = "per_participant")]
    pub self_mask_shares: Vec<(u32, Share)>,
    /// `(owner, share of owner's mask secret key)` for owners that dropped.
    #[serde(deserialize_with = "per_participant")]
    pub mask_key_shares: Vec<(u32, Share)>,
}

/// A client message body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientBody {
    /// Stage 1.
    AdvertiseKeys(AdvertiseKeys),
    /// Stage 2.
    ShareKeys(ShareKeys),
    /// Stage 3.
    MaskedInput(MaskedInput),
    /// Stage 4.
    ConsistencyCheck(ConsistencyCheck),
    /// Stage 5.
    Unmask(Unmask),
    /// Inside stage 3's message: the neighbours masked with.
    MaskCommitment(MaskCommitment),
}

impl ClientBody {
    /// The stage this body belongs to.
    pub fn stage(&self) -> Stage {
        match self {
            Self::AdvertiseKeys(_) => Stage::AdvertiseKeys,
            Self::ShareKeys(_) => Stage::ShareKeys,
            Self::MaskedInput(_) => Stage::MaskedInput,
            Self::ConsistencyCheck(_) => Stage::ConsistencyCheck,
            Self::Unmask(_) => Stage::Unmask,
            Self::MaskCommitment(_) => Stage::MaskedInput,
        }
    }
}

/// A client message signed by its sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// Sender's index in the round.
    pub from: u32,
    /// The message.
    pub body: ClientBody,
    /// Ed25519 signature (see the module docs for what it covers).
    #[serde(with = "sig64")]
    pub signature: [u8; 64],
}

/// Byte strings as one length-prefixed blob (postcard would otherwise
/// encode a `Vec<u8>` element by element).
mod bytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    struct Bytes;

    impl<'de> Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(Bytes)
    }
}

/// Serde for a 64-byte Ed25519 signature (as a length-checked sequence), for
/// `#[serde(with = "tg_secagg::messages::sig64")]` wherever one travels.
pub mod sig64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the signature.
    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        v.as_slice().serialize(s)
    }

    /// Reads a signature, refusing any other length.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v = Vec::<u8>::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("signature must be 64 bytes"))
    }
}

fn signed_bytes(ctx: &Context, from: u32, body: &ClientBody) -> Result<Vec<u8>, SecAggError> {
    let mut out = Vec::with_capacity(DOMAIN.len() + 32);
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(&ctx.job);
    out.extend_from_slice(&ctx.round.to_le_bytes());
    out.extend_from_slice(&ctx.config);
    out.push(body.stage() as u8);
    out.extend_from_slice(&from.to_le_bytes());
    // The body enters by its SHA-256 (SHA-NI where present): Ed25519 would
    // otherwise hash a multi-megabyte masked input twice when signing.
    let encoded = postcard::to_allocvec(body)
        .map_err(|e| SecAggError::Protocol(format!("cannot encode a message: {e}")))?;
    out.extend_from_slice(&Sha256::digest(&encoded));
    Ok(out)
}

impl Signed {
    /// Signs `body` as client `from` of the round `ctx`.
    pub fn sign(
        ctx: &Context,
        from: u32,
        body: ClientBody,
        key: &SigningKey,
    ) -> Result<Self, SecAggError> {
        let signature = key.sign(&signed_bytes(ctx, from, &body)?).to_bytes();
        Ok(Self {
            from,
            body,
            signature,
        })
    }

    /// Checks the signature against the sender's identity for round `ctx`.
    pub fn verify(&self, ctx: &Context, identity: &VerifyingKey) -> Result<(), SecAggError> {
        let bytes = signed_bytes(ctx, self.from, &self.body)?;
        identity
            .verify(&bytes, &Signature::from_bytes(&self.signature))
            .map_err(|_| {
                SecAggError::refused(
                    crate::Refusal::BadSignature,
                    format!(
                        "message from client {} (forged, or from another job, round, stage or configuration)",
                        self.from
                    ),
                )
            })
    }
}

/// A strictly increasing list of round indices, at most one per
/// participant, refused while decoded otherwise: only the first 128 can
/// take one wire byte, and later ones at least two, so a long list costs at
/// most ~2× its wire size in memory (4 bytes per index, none spare).
fn increasing_indices<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u32>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(
                f,
                "at most {} strictly increasing indices",
                tg_types::view::MAX_PER_PARTICIPANT
            )
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u32>, A::Error> {
            use serde::de::Error;
            let max = tg_types::view::MAX_PER_PARTICIPANT;
            if seq.size_hint().is_some_and(|n| n > max) {
                return Err(A::Error::custom(format!("more than {max} indices")));
            }
            // Exactly the claimed length (at most 256 KiB): a list holds no
            // slack from doubling, and a false claim fails this decode.
            let mut out: Vec<u32> = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(max));
            while let Some(x) = seq.next_element::<u32>()? {
                if out.len() == max {
                    return Err(A::Error::custom(format!("more than {max} indices")));
                }
                if out.last().is_some_and(|&last| last >= x) {
                    return Err(A::Error::custom("indices not strictly increasing"));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V)
}

mod forward;

pub use forward::{Confirmation, Confirmations, ServerBody, SignedKeys};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_cannot_nest_in_itself_so_small_frames_cannot_overflow_the_stack() {
        // The bytes a masked input nested in its own commitment, 300,000
        // deep, would take (from, MaskedInput, empty packed, …): before the
        // commitment had its own type, decoding this recursed once per level
        // and aborted the process. Now it is a short, bounded read.
        let nested: Vec<u8> = std::iter::repeat_n([0u8, 2, 0], 300_000)
            .flatten()
            .collect();
        let _ = postcard::from_bytes::<Signed>(&nested);
        let _ = postcard::from_bytes::<ClientBody>(&nested[1..]);
        let _ = postcard::from_bytes::<ServerBody>(&nested);
    }

    #[test]
    fn per_participant_lists_are_refused_past_any_rounds_size() {
        use tg_types::view::MAX_PER_PARTICIPANT;
        // 2 wire bytes per entry, ~16× that in memory: counted, then refused.
        let survivors = ServerBody::Survivors((0..=MAX_PER_PARTICIPANT as u32).collect());
        let bytes = postcard::to_stdvec(&survivors).unwrap();
        assert!(postcard::from_bytes::<ServerBody>(&bytes).is_err());
        let fits = ServerBody::Survivors((0..MAX_PER_PARTICIPANT as u32).collect());
        let bytes = postcard::to_stdvec(&fits).unwrap();
        assert_eq!(postcard::from_bytes::<ServerBody>(&bytes).unwrap(), fits);
    }

    #[test]
    fn a_commitment_whose_neighbours_repeat_or_go_down_is_refused_while_decoded() {
        for masked_with in [vec![0, 0, 0, 0], vec![5, 4], vec![1, 2, 2]] {
            let c = MaskCommitment { masked_with };
            let bytes = postcard::to_stdvec(&c).unwrap();
            assert!(postcard::from_bytes::<MaskCommitment>(&bytes).is_err());
        }
        let ok = MaskCommitment {
            masked_with: vec![0, 3, 70_000],
        };
        let bytes = postcard::to_stdvec(&ok).unwrap();
        assert_eq!(postcard::from_bytes::<MaskCommitment>(&bytes).unwrap(), ok);
    }

    #[test]
    fn a_sealed_share_shorter_than_its_nonce_and_tag_is_refused_while_decoded() {
        let short = ShareKeys {
            sealed: vec![Sealed {
                to: 0,
                ciphertext: vec![0; MIN_SEALED - 1],
            }],
        };
        let bytes = postcard::to_stdvec(&short).unwrap();
        assert!(postcard::from_bytes::<ShareKeys>(&bytes).is_err());
        let fits = ShareKeys {
            sealed: vec![Sealed {
                to: 0,
                ciphertext: vec![0; MIN_SEALED],
            }],
        };
        let bytes = postcard::to_stdvec(&fits).unwrap();
        assert_eq!(postcard::from_bytes::<ShareKeys>(&bytes).unwrap(), fits);
    }
}
