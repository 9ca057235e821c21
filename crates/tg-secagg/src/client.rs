//! The client side of a round, as a state machine driven by server messages.
//!
//! Design decision: each `on_*` method accepts exactly one stage's input and
//! returns the signed message for the next; calling one out of order is an
//! error, never a panic. The client's secrets (the self-mask seed, both
//! X25519 secrets, the input) live only here and are wiped on drop. The
//! client enforces the rules that keep inputs private from a server that
//! deviates (Bell et al. 2020, malicious setting):
//! - it masks only once it holds shares from at least `t` neighbours, and
//!   with exactly those (E100);
//! - it signs a survivor set only if the set is well formed and above the
//!   floor, every surviving neighbour is one it masked with, and at least
//!   `t` of those it masked with survive (E102–E105);
//! - its masked input carries a signed commitment to the neighbours it
//!   masked with;
//! - for each neighbour it reveals a share of the self-mask seed *or* of the
//!   mask key — never both — after `t` surviving neighbours confirmed the
//!   same set (E106, E108), and a self-mask share only if that survivor's
//!   commitment shows the set leaves its mask standing (E104, E105, E107),
//!   so no server can unmask a survivor by declaring its masking neighbours
//!   dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{Apply, KeyPair, Secret32, agree, apply_mask, derive, open, seal, seal_key};
use crate::messages::{
    AdvertiseKeys, ClientBody, Confirmations, ConsistencyCheck, MaskCommitment, MaskedInput,
    Sealed, ShareKeys, Signed, SignedCommitment, SignedKeys, Stage, Unmask,
};
use crate::packing::{lane_mask, pack};
use crate::round::{Floors, RoundConfig};
use crate::rules::{refused, strips_no_mask};
use crate::shamir::{self, Share};
use crate::{Refusal, SecAggError};

/// KDF label of the pairwise mask seed (public: labels are not secrets).
pub const MASK: &[u8] = b"pairwise-mask";
/// KDF label of the self-mask seed.
pub const SELF_MASK: &[u8] = b"self-mask";

/// The plaintext of one sealed share pair.
#[derive(Serialize, Deserialize, Zeroize)]
struct SharePair {
    owner: u32,
    holder: u32,
    self_seed: Share,
    mask_key: Share,
}

/// One client in one round.
pub struct Client {
    cfg: Arc<RoundConfig>,
    me: u32,
    identity: SigningKey,
    share_keys: KeyPair,
    mask_keys: KeyPair,
    self_seed: Secret32,
    input: Zeroizing<Vec<u32>>,
    next: Stage,
    /// Verified key advertisements of neighbours.
    advertised: BTreeMap<u32, AdvertiseKeys>,
    /// Shares this client holds of each neighbour's secrets: exactly the
    /// neighbours it masked with.
    held: BTreeMap<u32, (Share, Share)>,
    survivors: Vec<u32>,
}

impl Client {
    /// Starts a round with `input` (one u32 per lane, already encoded mod
    /// 2^B); returns the client and its stage-1 message. A round below the
    /// data owner's `floors` is refused (E110) before anything is sent.
    pub fn new(
        cfg: Arc<RoundConfig>,
        me: u32,
        identity: SigningKey,
        input: Vec<u32>,
        floors: &Floors,
        rng: &mut impl CryptoRng,
    ) -> Result<(Self, Signed), SecAggError> {
        if cfg.identity(me)? != &identity.verifying_key() {
            return Err(SecAggError::Params(format!(
                "the round lists another identity for participant {me}"
            )));
        }
        cfg.check_floors(floors)?;
        if input.len() != cfg.dim {
            return Err(SecAggError::Params(format!(
                "input has {} lanes, the round expects {}",
                input.len(),
                cfg.dim
            )));
        }
        let mut random = || {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            b
        };
        let share_keys = KeyPair::from_random(random());
        let mask_keys = KeyPair::from_random(random());
        let self_seed = Zeroizing::new(random());
        let body = ClientBody::AdvertiseKeys(AdvertiseKeys {
            share_key: share_keys.public,
            mask_key: mask_keys.public,
        });
        let msg = Signed::sign(&cfg.ctx, me, body, &identity)?;
        Ok((
            Self {
                cfg,
                me,
                identity,
                share_keys,
                mask_keys,
                self_seed,
                input: Zeroizing::new(input),
                next: Stage::ShareKeys,
                advertised: BTreeMap::new(),
                held: BTreeMap::new(),
                survivors: Vec::new(),
            },
            msg,
        ))
    }

    fn expect(&mut self, stage: Stage) -> Result<(), SecAggError> {
        if self.next != stage {
            return refused(
                Refusal::Malformed,
                format!(
                    "client {} expected input for {:?}, got {stage:?}",
                    self.me, self.next
                ),
            );
        }
        Ok(())
    }

    /// The identity of a message's claimed sender; an index outside the
    /// round is the server's fault (E111).
    fn sender(&self, from: u32) -> Result<&ed25519_dalek::VerifyingKey, SecAggError> {
        self.cfg.identity(from).map_err(|_| {
            SecAggError::refused(
                Refusal::Malformed,
                format!("no participant {from} in this round"),
            )
        })
    }

    fn sign(&self, body: ClientBody) -> Result<Signed, SecAggError> {
        Signed::sign(&self.cfg.ctx, self.me, body, &self.identity)
    }

    /// Stage 2: given the neighbours' key advertisements, shares this
    /// client's secrets t-of-k among them, sealed to each.
    pub fn on_neighbour_keys(
        &mut self,
        keys: &[SignedKeys],
        rng: &mut impl CryptoRng,
    ) -> Result<Signed, SecAggError> {
        self.expect(Stage::ShareKeys)?;
        for m in keys {
            if !self.cfg.are_neighbours(self.me, m.from) {
                return refused(
                    Refusal::Malformed,
                    format!(
                        "server sent keys of client {}, not a neighbour of {}",
                        m.from, self.me
                    ),
                );
            }
            m.to_signed().verify(&self.cfg.ctx, self.sender(m.from)?)?;
            let k = &m.keys;
            if !crate::crypto::is_contributory(&k.share_key)
                || !crate::crypto::is_contributory(&k.mask_key)
            {
                // A neighbour with a low-order key is left out, not obeyed.
                continue;
            }
            if self.advertised.insert(m.from, k.clone()).is_some() {
                return refused(
                    Refusal::Malformed,
                    format!("client {} advertised twice", m.from),
                );
            }
        }
        let t = self.cfg.graph.threshold;
        if self.advertised.len() < t {
            return refused(
                Refusal::TooFewKeys,
                format!(
                    "{} neighbours' keys, the threshold is {t}",
                    self.advertised.len()
                ),
            );
        }
        let holders: Vec<u32> = self.advertised.keys().copied().collect();
        let xs: Vec<u64> = holders.iter().map(|&h| RoundConfig::point(h)).collect();
        let seed_shares = shamir::split(&self.self_seed, t, &xs, rng)?;
        let key_shares = shamir::split(&self.mask_keys.secret_bytes(), t, &xs, rng)?;
        let mut sealed = Vec::with_capacity(holders.len());
        for ((h, s), k) in holders.iter().zip(seed_shares).zip(key_shares) {
            let mut pair = SharePair {
                owner: self.me,
                holder: *h,
                self_seed: s,
                mask_key: k,
            };
            let mut plain = Zeroizing::new(
                postcard::to_allocvec(&pair)
                    .map_err(|e| SecAggError::Protocol(format!("encoding a share: {e}")))?,
            );
            pair.zeroize();
            let key = seal_key(
                &self.share_keys.secret_bytes(),
                &self.advertised[h].share_key,
                &self.cfg.ctx,
                self.me,
                *h,
            )?;
            sealed.push(Sealed {
                to: *h,
                ciphertext: seal(&key, &self.cfg.ctx, self.me, *h, &plain, rng)?,
            });
            plain.zeroize();
        }
        self.next = Stage::MaskedInput;
        self.sign(ClientBody::ShareKeys(ShareKeys { sealed }))
    }

    /// Stage 3: opens the shares addressed to this client and masks the
    /// input with exactly the neighbours whose shares it now holds — at
    /// least `t` of them, or it refuses (E100).
    pub fn on_shares(&mut self, sealed: &[(u32, Sealed)]) -> Result<Signed, SecAggError> {
        self.expect(Stage::MaskedInput)?;
        for (from, Sealed { to, ciphertext: ct }) in sealed {
            if *to != self.me {
                return refused(
                    Refusal::Malformed,
                    format!("server forwarded a share for client {to} to {}", self.me),
                );
            }
            let Some(keys) = self.advertised.get(from) else {
                return refused(
                    Refusal::Malformed,
                    format!(
                        "shares from client {from}, which did not advertise to {}",
                        self.me
                    ),
                );
            };
            let key = seal_key(
                &self.share_keys.secret_bytes(),
                &keys.share_key,
                &self.cfg.ctx,
                *from,
                self.me,
            )?;
            let plain = open(&key, &self.cfg.ctx, *from, self.me, ct).map_err(|_| {
                SecAggError::refused(
                    Refusal::Malformed,
                    format!("the share sealed by client {from} fails authentication"),
                )
            })?;
            let pair: SharePair = postcard::from_bytes(&plain).map_err(|e| {
                SecAggError::refused(Refusal::Malformed, format!("malformed share: {e}"))
            })?;
            let point = RoundConfig::point(self.me);
            if pair.owner != *from
                || pair.holder != self.me
                || pair.self_seed.x != point
                || pair.mask_key.x != point
            {
                return refused(
                    Refusal::Malformed,
                    format!("share from client {from} is addressed to someone else"),
                );
            }
            if self
                .held
                .insert(*from, (pair.self_seed.clone(), pair.mask_key.clone()))
                .is_some()
            {
                return refused(
                    Refusal::Malformed,
                    format!("two share sets from client {from}"),
                );
            }
        }
        let t = self.cfg.graph.threshold;
        if self.held.len() < t {
            // Masking with fewer would let the server strip the mask by
            // declaring those few dropped: nothing is sent.
            return refused(
                Refusal::TooFewShares,
                format!(
                    "shares from {} neighbours reached client {}, the threshold is {t}",
                    self.held.len(),
                    self.me
                ),
            );
        }
        // y = x + PRG(b) + Σ_{j>me} PRG(s_mj) − Σ_{j<me} PRG(s_mj)  (mod 2^B)
        let mut y = std::mem::take(&mut *self.input);
        let own = derive(&self.self_seed, &self.cfg.ctx, SELF_MASK, self.me)?;
        apply_mask(&own, &mut y, Apply::Add, self.cfg.prg)?;
        for j in self.held.keys() {
            let seed = agree(
                &self.mask_keys.secret_bytes(),
                &self.advertised[j].mask_key,
                &self.cfg.ctx,
                MASK,
                self.me,
                *j,
            )?;
            let how = if self.me < *j {
                Apply::Add
            } else {
                Apply::Subtract
            };
            apply_mask(&seed, &mut y, how, self.cfg.prg)?;
        }
        let mask = lane_mask(self.cfg.bits);
        y.iter_mut().for_each(|v| *v &= mask);
        let packed = pack(&y, self.cfg.bits);
        y.zeroize();
        self.next = Stage::ConsistencyCheck;
        let commitment = SignedCommitment::from_signed(self.sign(ClientBody::MaskCommitment(
            MaskCommitment {
                masked_with: self.held.keys().copied().collect(),
            },
        ))?)
        .map(Box::new)
        .ok_or_else(|| SecAggError::Rejected("a commitment signed as another body".into()))?;
        self.sign(ClientBody::MaskedInput(MaskedInput { packed, commitment }))
    }

    /// Stage 4: signs the survivor set the server announced, if it is
    /// well formed (E102), above the floor (E103), lists no neighbour this
    /// client did not mask with (E104) and keeps at least `t` of those it
    /// did mask with (E105).
    pub fn on_survivors(&mut self, survivors: &[u32]) -> Result<Signed, SecAggError> {
        self.expect(Stage::ConsistencyCheck)?;
        let n = self.cfg.n() as u32;
        if !survivors.windows(2).all(|w| w[0] < w[1]) {
            return refused(Refusal::MalformedSurvivors, "not sorted and unique");
        }
        if let Some(bad) = survivors.iter().find(|&&s| s >= n) {
            return refused(
                Refusal::MalformedSurvivors,
                format!("index {bad} in a round of {n}"),
            );
        }
        if survivors.binary_search(&self.me).is_err() {
            return refused(
                Refusal::MalformedSurvivors,
                format!("client {} sent its input but is not listed", self.me),
            );
        }
        if survivors.len() < self.cfg.min_survivors {
            return refused(
                Refusal::SurvivorsBelowFloor,
                format!(
                    "{} survivors, the round's floor is {}",
                    survivors.len(),
                    self.cfg.min_survivors
                ),
            );
        }
        let masked_with: Vec<u32> = self.held.keys().copied().collect();
        strips_no_mask(&self.cfg, self.me, &masked_with, survivors)?;
        self.survivors = survivors.to_vec();
        self.next = Stage::Unmask;
        self.sign(ClientBody::ConsistencyCheck(ConsistencyCheck {
            survivors: survivors.to_vec(),
        }))
    }

    /// Stage 5: checks that surviving neighbours signed the same set — at
    /// least `t` of them (E108), none another set (E106) — and that every
    /// survivor whose self-mask share this client holds committed to masking
    /// neighbours this set keeps (E104, E105, E107); then reveals, per
    /// neighbour, a self-mask share (survived) or a mask-key share (dropped).
    pub fn on_survivor_signatures(
        &mut self,
        forwarded: &Confirmations,
    ) -> Result<Signed, SecAggError> {
        self.expect(Stage::Unmask)?;
        let surviving_neighbour = |from: u32| {
            self.survivors.binary_search(&from).is_ok() && self.cfg.are_neighbours(self.me, from)
        };
        let twice = |from: u32| {
            refused(
                Refusal::Malformed,
                format!(
                    "a stage-5 message from {from}: not a surviving neighbour's, malformed, or twice"
                ),
            )
        };
        let mut signers = BTreeSet::new();
        for c in &forwarded.signatures {
            let identity = self.sender(c.from)?;
            if !(surviving_neighbour(c.from) && signers.insert(c.from)) {
                return twice(c.from);
            }
            // Checked against the set this client was told: a neighbour
            // shown another set signed another message.
            if c.to_signed(&self.survivors)
                .verify(&self.cfg.ctx, identity)
                .is_err()
            {
                return refused(
                    Refusal::Equivocation,
                    format!(
                        "client {}'s confirmation is not of this survivor set (it was shown another, or the signature is forged)",
                        c.from
                    ),
                );
            }
        }
        let mut commitments: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for c in &forwarded.commitments {
            c.to_signed().verify(&self.cfg.ctx, self.sender(c.from)?)?;
            let masked_with = &c.commitment.masked_with;
            if !(surviving_neighbour(c.from)
                && masked_with.windows(2).all(|w| w[0] < w[1])
                && commitments.insert(c.from, masked_with.clone()).is_none())
            {
                return twice(c.from);
            }
        }
        let t = self.cfg.graph.threshold;
        if signers.len() < t {
            return refused(
                Refusal::TooFewConfirmations,
                format!(
                    "{} surviving neighbours confirmed the set, the threshold is {t}",
                    signers.len()
                ),
            );
        }
        for owner in self.held.keys() {
            if self.survivors.binary_search(owner).is_err() {
                continue;
            }
            let Some(masked_with) = commitments.get(owner) else {
                return refused(
                    Refusal::MissingCommitment,
                    format!("no signed mask commitment of survivor {owner}"),
                );
            };
            // The owner's seed is revealed only if this set leaves its mask
            // standing, whatever set the owner itself was shown.
            strips_no_mask(&self.cfg, *owner, masked_with, &self.survivors)?;
        }
        let mut reveal = Unmask {
            self_mask_shares: Vec::new(),
            mask_key_shares: Vec::new(),
        };
        for (owner, (seed_share, key_share)) in &self.held {
            if self.survivors.binary_search(owner).is_ok() {
                reveal.self_mask_shares.push((*owner, seed_share.clone()));
            } else {
                reveal.mask_key_shares.push((*owner, key_share.clone()));
            }
        }
        // Revealing twice (e.g. for a second survivor set) is impossible: the stage is spent.
        self.next = Stage::AdvertiseKeys;
        self.held.clear();
        self.sign(ClientBody::Unmask(reveal))
    }
}
