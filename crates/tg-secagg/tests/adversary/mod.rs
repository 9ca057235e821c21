//! A malicious coordinator that speaks the real protocol, its Sybil clients,
//! and the attacker's reconstruction: everything the red-team tests share.
//!
//! The coordinator here is not `tg_secagg::Server`: it is the attacker. It
//! decides per client what to route (drop, withhold, reorder, duplicate,
//! substitute, equivocate), runs Sybil participants with its own keys, and
//! at the end tries to recover honest inputs from everything it holds, the
//! way an attacker would: Shamir-combine every secret it has enough shares
//! of (revealed, held by Sybils, or decrypted by reflecting share
//! ciphertexts), then solve for inputs whose masks it can remove.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use tg_secagg::crypto::{Context, KeyPair, open, seal, seal_key};
use tg_secagg::messages::{
    AdvertiseKeys, ClientBody, ConsistencyCheck, MaskCommitment, Sealed, ServerBody, ShareKeys,
    Signed,
};
use tg_secagg::packing::lane_mask;
use tg_secagg::shamir::{self, Share};
use tg_secagg::{Client, Floors, Refusal, RoundConfig, SecAggError};

/// Shares the attacker holds of one owner's secrets, by evaluation point:
/// (self-mask seed shares, mask-key shares).
pub type Holdings = (BTreeMap<u64, Share>, BTreeMap<u64, Share>);

/// The plaintext layout of a sealed share pair (the protocol's, by structure).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct SharePair {
    pub owner: u32,
    pub holder: u32,
    pub self_seed: Share,
    pub mask_key: Share,
}

pub fn signing_keys(n: usize, seed: u64) -> Vec<SigningKey> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            SigningKey::from_bytes(&b)
        })
        .collect()
}

pub fn config(
    keys: &[SigningKey],
    dim: usize,
    bits: u32,
    corrupt: f64,
    dropout: f64,
) -> Arc<RoundConfig> {
    RoundConfig::new(
        Context::new([0x5a; 16], 1),
        keys.iter().map(SigningKey::verifying_key).collect(),
        dim,
        bits,
        corrupt,
        dropout,
    )
    .unwrap()
}

/// A participant the attacker controls: it follows the protocol's formats
/// with its own keys, and keeps every share sent to it.
pub struct Sybil {
    pub me: u32,
    identity: SigningKey,
    share_keys: KeyPair,
    pub mask_keys: KeyPair,
    pub self_seed: [u8; 32],
    /// Shares of others' secrets this Sybil was sent: owner → pair.
    pub held: BTreeMap<u32, SharePair>,
}

impl Sybil {
    fn new(me: u32, identity: SigningKey, rng: &mut ChaCha20Rng) -> Self {
        let mut r = || {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            b
        };
        Self {
            me,
            identity,
            share_keys: KeyPair::from_random(r()),
            mask_keys: KeyPair::from_random(r()),
            self_seed: r(),
            held: BTreeMap::new(),
        }
    }
}

/// What the attacker holds at the end, and what it did.
pub struct Attack {
    /// The configuration each client was given (the attacker may give different ones).
    pub cfgs: Vec<Arc<RoundConfig>>,
    /// The configuration the attacker reconstructs with.
    pub cfg: Arc<RoundConfig>,
    pub inputs: Vec<Vec<u32>>,
    pub honest: Vec<Option<Client>>,
    pub sybils: BTreeMap<u32, Sybil>,
    /// Every message any client sent the attacker, in arrival order.
    pub transcript: Vec<Signed>,
    /// Who each client accepted shares from (= masked with, if it then sent a masked input).
    pub delivered: BTreeMap<u32, BTreeSet<u32>>,
    /// Honest clients that refused, with the code.
    pub refusals: BTreeMap<u32, Refusal>,
    pub rng: ChaCha20Rng,
}

impl Attack {
    /// A round of `keys.len()` clients on `cfg`; `sybils` are the attacker's.
    pub fn new(
        cfg: Arc<RoundConfig>,
        keys: &[SigningKey],
        sybils: &[u32],
        floors: &Floors,
        seed: u64,
    ) -> Self {
        Self::with_configs(
            vec![cfg.clone(); keys.len()],
            cfg,
            keys,
            sybils,
            floors,
            seed,
        )
    }

    /// As [`Attack::new`], with a (possibly different) configuration per client.
    pub fn with_configs(
        cfgs: Vec<Arc<RoundConfig>>,
        cfg: Arc<RoundConfig>,
        keys: &[SigningKey],
        sybils: &[u32],
        floors: &Floors,
        seed: u64,
    ) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mask = lane_mask(cfg.bits);
        let n = keys.len();
        let inputs: Vec<Vec<u32>> = (0..n)
            .map(|_| (0..cfg.dim).map(|_| rng.next_u32() & mask).collect())
            .collect();
        let mut a = Self {
            cfgs,
            cfg,
            inputs,
            honest: Vec::new(),
            sybils: BTreeMap::new(),
            transcript: Vec::new(),
            delivered: BTreeMap::new(),
            refusals: BTreeMap::new(),
            rng,
        };
        for (i, k) in keys.iter().enumerate() {
            let i32 = i as u32;
            if sybils.contains(&i32) {
                let s = Sybil::new(i32, k.clone(), &mut a.rng);
                let m = a.sybil_advertise(&s);
                a.transcript.push(m);
                a.sybils.insert(i32, s);
                a.honest.push(None);
                continue;
            }
            match Client::new(
                a.cfgs[i].clone(),
                i32,
                k.clone(),
                a.inputs[i].clone(),
                floors,
                &mut a.rng,
            ) {
                Ok((c, m)) => {
                    a.transcript.push(m);
                    a.honest.push(Some(c));
                }
                Err(e) => {
                    a.note_refusal(i32, &e);
                    a.honest.push(None);
                }
            }
        }
        a
    }

    fn sybil_advertise(&self, s: &Sybil) -> Signed {
        Signed::sign(
            &self.cfg.ctx,
            s.me,
            ClientBody::AdvertiseKeys(AdvertiseKeys {
                share_key: s.share_keys.public,
                mask_key: s.mask_keys.public,
            }),
            &s.identity,
        )
        .unwrap()
    }

    fn note_refusal(&mut self, i: u32, e: &SecAggError) {
        let code = e
            .refusal()
            .unwrap_or_else(|| panic!("client {i} failed without a refusal code: {e}"));
        self.refusals.insert(i, code);
    }

    pub fn n(&self) -> u32 {
        self.cfg.n() as u32
    }

    pub fn is_honest(&self, i: u32) -> bool {
        !self.sybils.contains_key(&i)
    }

    /// The last message of `stage` that `from` sent, if any.
    pub fn sent(&self, from: u32, stage: tg_secagg::messages::Stage) -> Option<&Signed> {
        self.transcript
            .iter()
            .rev()
            .find(|m| m.from == from && m.body.stage() == stage)
    }

    fn advert(&self, of: u32) -> Option<AdvertiseKeys> {
        match &self
            .sent(of, tg_secagg::messages::Stage::AdvertiseKeys)?
            .body
        {
            ClientBody::AdvertiseKeys(k) => Some(k.clone()),
            _ => None,
        }
    }

    /// Hands `body` to honest client `i`; its reply joins the transcript,
    /// a refusal is recorded (and the client is gone).
    pub fn deliver(&mut self, i: u32, body: ServerBody) -> Option<Signed> {
        let mut client = self.honest[i as usize].take()?;
        let accepted_from: Option<BTreeSet<u32>> = match &body {
            ServerBody::SharesForYou(s) => Some(s.iter().map(|(f, _)| *f).collect()),
            _ => None,
        };
        let r = match body {
            ServerBody::NeighbourKeys(k) => client.on_neighbour_keys(&k, &mut self.rng),
            ServerBody::SharesForYou(s) => client.on_shares(&s),
            ServerBody::Survivors(s) => client.on_survivors(&s),
            ServerBody::SurvivorSignatures(s) => client.on_survivor_signatures(&s),
            other => panic!("unknown body {other:?}"),
        };
        match r {
            Ok(m) => {
                if let Some(from) = accepted_from {
                    self.delivered.insert(i, from);
                }
                self.transcript.push(m.clone());
                self.honest[i as usize] = Some(client);
                Some(m)
            }
            Err(e) => {
                self.note_refusal(i, &e);
                None
            }
        }
    }

    /// Honest routing of stage-1 output: i's neighbours' advertisements.
    pub fn neighbour_keys(&self, i: u32) -> Vec<Signed> {
        (0..self.n())
            .filter(|&j| self.cfg.are_neighbours(i, j))
            .filter_map(|j| {
                self.sent(j, tg_secagg::messages::Stage::AdvertiseKeys)
                    .cloned()
            })
            .collect()
    }

    /// Every Sybil shares its secrets with its neighbours.
    pub fn sybils_share(&mut self) {
        let ids: Vec<u32> = self.sybils.keys().copied().collect();
        for id in ids {
            let holders: Vec<u32> = (0..self.n())
                .filter(|&j| self.cfg.are_neighbours(id, j) && self.advert(j).is_some())
                .collect();
            let t = self.cfg.graph.threshold;
            if holders.len() < t {
                continue;
            }
            let xs: Vec<u64> = holders.iter().map(|&h| RoundConfig::point(h)).collect();
            let s = &self.sybils[&id];
            let seeds = shamir::split(&s.self_seed, t, &xs, &mut self.rng).unwrap();
            let keys = shamir::split(&s.mask_keys.secret_bytes(), t, &xs, &mut self.rng).unwrap();
            let mut sealed = Vec::new();
            for ((h, a), b) in holders.iter().zip(seeds).zip(keys) {
                let pair = SharePair {
                    owner: id,
                    holder: *h,
                    self_seed: a,
                    mask_key: b,
                };
                let plain = postcard::to_allocvec(&pair).unwrap();
                let their = self.advert(*h).unwrap().share_key;
                let key =
                    seal_key(&s.share_keys.secret_bytes(), &their, &self.cfg.ctx, id, *h).unwrap();
                sealed.push(Sealed {
                    to: *h,
                    ciphertext: seal(&key, &self.cfg.ctx, id, *h, &plain, &mut self.rng).unwrap(),
                });
            }
            let m = Signed::sign(
                &self.cfg.ctx,
                id,
                ClientBody::ShareKeys(ShareKeys { sealed }),
                &s.identity,
            )
            .unwrap();
            self.transcript.push(m);
        }
    }

    /// Sealed shares addressed to `to`, from every sender in `from`.
    pub fn shares_to(&self, to: u32, from: impl Fn(u32) -> bool) -> Vec<(u32, Sealed)> {
        let mut out = Vec::new();
        for m in &self.transcript {
            if let ClientBody::ShareKeys(s) = &m.body {
                if !from(m.from) {
                    continue;
                }
                if let Some(p) = s.sealed.iter().find(|p| p.to == to) {
                    out.push((m.from, p.clone()));
                }
            }
        }
        out
    }

    /// Sybils open every share addressed to them.
    pub fn sybils_collect(&mut self) {
        let ids: Vec<u32> = self.sybils.keys().copied().collect();
        for id in ids {
            for (from, p) in self.shares_to(id, |_| true) {
                let Some(adv) = self.advert(from) else {
                    continue;
                };
                let s = &self.sybils[&id];
                let key = seal_key(
                    &s.share_keys.secret_bytes(),
                    &adv.share_key,
                    &self.cfg.ctx,
                    from,
                    id,
                )
                .unwrap();
                if let Ok(plain) = open(&key, &self.cfg.ctx, from, id, &p.ciphertext)
                    && let Ok(pair) = postcard::from_bytes::<SharePair>(&plain)
                {
                    self.sybils.get_mut(&id).unwrap().held.insert(from, pair);
                }
            }
        }
    }

    /// A Sybil's signature on a survivor set (Sybils sign whatever helps).
    pub fn sybil_confirm(&self, id: u32, survivors: &[u32]) -> Signed {
        Signed::sign(
            &self.cfg.ctx,
            id,
            ClientBody::ConsistencyCheck(ConsistencyCheck {
                survivors: survivors.to_vec(),
            }),
            &self.sybils[&id].identity,
        )
        .unwrap()
    }

    /// A Sybil's mask commitment: it claims whatever neighbours help.
    pub fn sybil_commit(&self, id: u32, masked_with: Vec<u32>) -> Signed {
        Signed::sign(
            &self.cfg.ctx,
            id,
            ClientBody::MaskCommitment(MaskCommitment { masked_with }),
            &self.sybils[&id].identity,
        )
        .unwrap()
    }

    /// What an honest server forwards to `i` at stage 5 for `set`: its
    /// neighbours' signatures on exactly `set`, their mask commitments, and
    /// whatever the Sybils among them sign (all their neighbours, `set`).
    pub fn stage5_for(&self, i: u32, set: &[u32]) -> Vec<Signed> {
        let mut out = self.confirmations_for(i, set);
        for m in &self.transcript {
            if let ClientBody::MaskedInput(x) = &m.body
                && self.cfg.are_neighbours(i, m.from)
                && set.contains(&m.from)
            {
                out.push(x.commitment.to_signed());
            }
        }
        for &s in self.sybils.keys() {
            if self.cfg.are_neighbours(i, s) && set.contains(&s) {
                out.push(self.sybil_confirm(s, set));
                let all: Vec<u32> = (0..self.n())
                    .filter(|&j| self.cfg.are_neighbours(s, j))
                    .collect();
                out.push(self.sybil_commit(s, all));
            }
        }
        out
    }

    /// Consistency signatures on exactly `set`, from `i`'s neighbours.
    pub fn confirmations_for(&self, i: u32, set: &[u32]) -> Vec<Signed> {
        self.transcript
            .iter()
            .filter(|m| {
                self.cfg.are_neighbours(i, m.from)
                    && matches!(&m.body, ClientBody::ConsistencyCheck(c) if c.survivors == set)
            })
            .cloned()
            .collect()
    }

    /// Client `i` drops out (the network lost it; nothing more from it).
    pub fn vanish(&mut self, i: u32) {
        self.honest[i as usize] = None;
    }

    /// Honest clients still in the round.
    pub fn live(&self) -> Vec<u32> {
        (0..self.n())
            .filter(|&i| self.honest[i as usize].is_some())
            .collect()
    }

    /// Runs stages 2 and 3 honestly for every live client, Sybils sharing too.
    pub fn honest_share_and_mask(&mut self) {
        for i in self.live() {
            let k = self.neighbour_keys(i);
            self.deliver(i, ServerBody::neighbour_keys(k));
        }
        self.sybils_share();
        self.sybils_collect();
        for i in self.live() {
            let s = self.shares_to(i, |_| true);
            self.deliver(i, ServerBody::SharesForYou(s));
        }
    }
}

/// The survivor sets each client is told, then what it gets at stage 5:
/// its neighbours' signatures on its own set and their mask commitments
/// (Sybils sign any set and commit to whatever helps).
pub fn announce_and_reveal(a: &mut Attack, told: impl Fn(u32) -> Vec<u32>) {
    for i in a.live() {
        a.deliver(i, ServerBody::Survivors(told(i)));
    }
    for i in a.live() {
        let sigs = a.stage5_for(i, &told(i));
        a.deliver(i, ServerBody::survivor_signatures(sigs));
    }
}

pub fn all_but(n: u32, out: &BTreeSet<u32>) -> Vec<u32> {
    (0..n).filter(|i| !out.contains(i)).collect()
}

mod reconstruct;
