//! What the server forwards to a client between stages: each stage's
//! client messages in the one typed form that stage needs.
//!
//! Design decision: forwarded lists are typed per stage, so a list cannot
//! carry message bodies with lists of their own; a malicious server could
//! otherwise make an agent decode many times a frame's size (signed unmask
//! bodies in a forward cost ~8×). Stage-4 confirmations travel without the
//! survivor set they signed: the client checks them against its own.

use serde::{Deserialize, Serialize};
use tg_types::view::bounded::per_participant;

use super::{AdvertiseKeys, ClientBody, ConsistencyCheck, Sealed, Signed, SignedCommitment, sig64};

/// A key advertisement with its sender's signature: exactly the [`Signed`]
/// message `ClientBody::AdvertiseKeys(keys)` (the same signature covers it),
/// in the only form the server forwards. A forwarded list can then hold
/// nothing but fixed-size advertisements: no body with lists of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedKeys {
    /// Sender's index in the round.
    pub from: u32,
    /// The advertised keys.
    pub keys: AdvertiseKeys,
    /// Ed25519 signature of the equivalent [`Signed`] message.
    #[serde(with = "sig64")]
    pub signature: [u8; 64],
}

impl SignedKeys {
    /// From a signed `ClientBody::AdvertiseKeys`; None for any other body.
    pub fn from_signed(s: Signed) -> Option<Self> {
        match s.body {
            ClientBody::AdvertiseKeys(keys) => Some(Self {
                from: s.from,
                keys,
                signature: s.signature,
            }),
            _ => None,
        }
    }

    /// The signed message it stands for (to verify).
    pub fn to_signed(&self) -> Signed {
        Signed {
            from: self.from,
            body: ClientBody::AdvertiseKeys(self.keys.clone()),
            signature: self.signature,
        }
    }
}

/// A neighbour's stage-4 signature without the survivor set it signed: the
/// receiving client checks it against the set *it* was told, so a
/// confirmation of any other set fails (the consistency check), and the set
/// is not sent k times over (at n = 1,000 that was most of a client's
/// download).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// Signer's index in the round.
    pub from: u32,
    /// Ed25519 signature of `ClientBody::ConsistencyCheck` on the set.
    #[serde(with = "sig64")]
    pub signature: [u8; 64],
}

impl Confirmation {
    /// From a signed `ClientBody::ConsistencyCheck`; None for any other body.
    pub fn from_signed(s: Signed) -> Option<Self> {
        matches!(s.body, ClientBody::ConsistencyCheck(_)).then_some(Self {
            from: s.from,
            signature: s.signature,
        })
    }

    /// The signed message it is if its signer confirmed `survivors`.
    pub fn to_signed(&self, survivors: &[u32]) -> Signed {
        Signed {
            from: self.from,
            body: ClientBody::ConsistencyCheck(ConsistencyCheck {
                survivors: survivors.to_vec(),
            }),
            signature: self.signature,
        }
    }
}

/// What the server forwards after stage 4: the client's surviving
/// neighbours' confirmations and mask commitments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmations {
    /// Signatures on the survivor set.
    #[serde(deserialize_with = "per_participant")]
    pub signatures: Vec<Confirmation>,
    /// Signed mask commitments (their neighbour lists are strictly
    /// increasing, refused while decoded otherwise, so nested lists cost at
    /// most about their wire size).
    #[serde(deserialize_with = "per_participant")]
    pub commitments: Vec<SignedCommitment>,
}

impl Confirmations {
    /// Sorts signed messages into confirmations and commitments; bodies of
    /// any other kind are left out (they cannot be forwarded at stage 5).
    pub fn from_signed(messages: impl IntoIterator<Item = Signed>) -> Self {
        let mut out = Self::default();
        for m in messages {
            match m.body {
                ClientBody::ConsistencyCheck(_) => {
                    out.signatures.extend(Confirmation::from_signed(m))
                }
                ClientBody::MaskCommitment(_) => {
                    out.commitments.extend(SignedCommitment::from_signed(m));
                }
                _ => {}
            }
        }
        out
    }
}

/// What the server sends a client to move it to the next stage. Forwarded
/// client messages travel typed, one kind per stage, so a list of them
/// cannot carry bodies with lists of their own (a malicious server could
/// otherwise make an agent decode ~8× a frame's size).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServerBody {
    /// After stage 1: the signed key advertisements of the client's
    /// neighbours that advertised.
    NeighbourKeys(#[serde(deserialize_with = "per_participant")] Vec<SignedKeys>),
    /// After stage 2: the sealed share pairs addressed to this client, as
    /// `(sender, pair)` (the pair's `to` is this client).
    SharesForYou(#[serde(deserialize_with = "per_participant")] Vec<(u32, Sealed)>),
    /// After stage 3: who sent a masked input.
    Survivors(#[serde(deserialize_with = "per_participant")] Vec<u32>),
    /// After stage 4: the consistency signatures of the client's surviving
    /// neighbours, and the mask commitments of those that survived.
    SurvivorSignatures(Confirmations),
}

impl ServerBody {
    /// Stage 1's forward of signed messages: advertisements only (any
    /// other body is left out).
    pub fn neighbour_keys(messages: impl IntoIterator<Item = Signed>) -> Self {
        Self::NeighbourKeys(
            messages
                .into_iter()
                .filter_map(SignedKeys::from_signed)
                .collect(),
        )
    }

    /// Stage 4's forward of signed messages (see [`Confirmations::from_signed`]).
    pub fn survivor_signatures(messages: impl IntoIterator<Item = Signed>) -> Self {
        Self::SurvivorSignatures(Confirmations::from_signed(messages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Context;
    use crate::messages::MaskCommitment;
    use ed25519_dalek::SigningKey;

    #[test]
    fn forwarded_lists_cost_about_their_wire_size() {
        // The worst a server can forward at stage 5: as many commitments as
        // fit, each naming as many neighbours as the decoder accepts, at the
        // fewest wire bytes per entry (the first indices). Before lists
        // were typed, signed unmask bodies in a forwarded list cost ~8× the
        // frame; the heap a decoded list holds is now within 3× its bytes.
        let commitment = |from: u32, len: u32| SignedCommitment {
            from,
            commitment: MaskCommitment {
                masked_with: (0..len).collect(),
            },
            signature: [7; 64],
        };
        for len in [0u32, 1, 100, 128, 129, 257, 5_000, 16_385, 65_536] {
            let body = ServerBody::SurvivorSignatures(Confirmations {
                signatures: (0..50)
                    .map(|from| Confirmation {
                        from,
                        signature: [1; 64],
                    })
                    .collect(),
                commitments: (0..50).map(|from| commitment(from, len)).collect(),
            });
            let wire = postcard::to_stdvec(&body).unwrap();
            let ServerBody::SurvivorSignatures(got) = postcard::from_bytes(&wire).unwrap() else {
                panic!("decoded another body")
            };
            // What the decoded value holds: allocated capacity, not length.
            let heap = got.signatures.capacity() * std::mem::size_of::<Confirmation>()
                + got.commitments.capacity() * std::mem::size_of::<SignedCommitment>()
                + got
                    .commitments
                    .iter()
                    .map(|c| 4 * c.commitment.masked_with.capacity())
                    .sum::<usize>();
            assert!(
                heap <= 3 * wire.len(),
                "{len}: {heap} B from {} B",
                wire.len()
            );
        }
    }

    #[test]
    fn forwarding_keeps_only_the_stage_s_kind_of_message() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let ctx = Context::new([1; 16], 1);
        let advert = Signed::sign(
            &ctx,
            2,
            ClientBody::AdvertiseKeys(AdvertiseKeys {
                share_key: [9; 32],
                mask_key: [8; 32],
            }),
            &key,
        )
        .unwrap();
        let check = Signed::sign(
            &ctx,
            2,
            ClientBody::ConsistencyCheck(ConsistencyCheck {
                survivors: vec![1, 2],
            }),
            &key,
        )
        .unwrap();
        let ServerBody::NeighbourKeys(k) =
            ServerBody::neighbour_keys([advert.clone(), check.clone()])
        else {
            panic!()
        };
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].to_signed(), advert);
        let f = Confirmations::from_signed([advert, check.clone()]);
        assert!(f.commitments.is_empty());
        assert_eq!(f.signatures.len(), 1);
        // The confirmation verifies only for the set it was made on.
        let id = key.verifying_key();
        assert!(f.signatures[0].to_signed(&[1, 2]).verify(&ctx, &id).is_ok());
        assert!(
            f.signatures[0]
                .to_signed(&[1, 2, 3])
                .verify(&ctx, &id)
                .is_err()
        );
    }
}
