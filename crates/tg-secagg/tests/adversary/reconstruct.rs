//! The attacker's reconstruction: everything a malicious coordinator can
//! compute from what it holds — Shamir-combined secrets (revealed, held by
//! its Sybils, or decrypted by reflecting share ciphertexts) and the inputs
//! whose masks it can then remove.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use tg_secagg::RoundConfig;
use tg_secagg::client::{MASK, SELF_MASK};
use tg_secagg::crypto::{Apply, KeyPair, agree, apply_mask, derive};
use tg_secagg::messages::ClientBody;
use tg_secagg::packing::{lane_mask, unpack};
use tg_secagg::shamir::{self, Share};

use super::{Attack, Holdings};

impl Attack {
    /// Every share the attacker holds of each owner's secrets: (self-seed
    /// shares, mask-key shares), keyed by evaluation point. Sources: unmask
    /// reveals, Sybils' holdings, and share ciphertexts decrypted by
    /// reflection (the i→j ciphertext XOR the j→i one XOR a revealed share).
    pub fn share_pool(&self) -> BTreeMap<u32, Holdings> {
        let mut pool: BTreeMap<u32, Holdings> = BTreeMap::new();
        for m in &self.transcript {
            if let ClientBody::Unmask(u) = &m.body {
                for (o, s) in &u.self_mask_shares {
                    pool.entry(*o).or_default().0.insert(s.x, s.clone());
                }
                for (o, s) in &u.mask_key_shares {
                    pool.entry(*o).or_default().1.insert(s.x, s.clone());
                }
            }
        }
        for s in self.sybils.values() {
            for (o, p) in &s.held {
                pool.entry(*o)
                    .or_default()
                    .0
                    .insert(p.self_seed.x, p.self_seed.clone());
                pool.entry(*o)
                    .or_default()
                    .1
                    .insert(p.mask_key.x, p.mask_key.clone());
            }
        }
        // Reflection: where d's mask-key share held by u was revealed, XOR it
        // into the tails of the d→u and u→d ciphertexts.
        let cts = self.ciphertexts();
        let revealed: Vec<(u32, u32, Share)> = self
            .transcript
            .iter()
            .filter_map(|m| match &m.body {
                ClientBody::Unmask(u) => Some(
                    u.mask_key_shares
                        .iter()
                        .map(|(o, s)| (*o, m.from, s.clone()))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        for (d, u, known) in revealed {
            let (Some(c_du), Some(c_ud)) = (cts.get(&(d, u)), cts.get(&(u, d))) else {
                continue;
            };
            let tail = postcard::to_allocvec(&known).unwrap();
            if let Some(guess) = reflect(c_du, c_ud, &tail)
                && let Ok(share) = postcard::from_bytes::<Share>(&guess)
                && share.x == RoundConfig::point(d)
            {
                // d's share of u's mask key, if the keystreams were shared.
                pool.entry(u).or_default().1.insert(share.x, share);
            }
        }
        pool
    }

    fn ciphertexts(&self) -> BTreeMap<(u32, u32), Vec<u8>> {
        let mut out = BTreeMap::new();
        for m in &self.transcript {
            if let ClientBody::ShareKeys(s) = &m.body {
                for p in &s.sealed {
                    out.insert((m.from, p.to), p.ciphertext.clone());
                }
            }
        }
        out
    }

    /// The secrets the attacker can reconstruct: self-mask seeds (unverified:
    /// they are checked by the input they unmask) and mask secret keys
    /// (verified against the advertised public key).
    pub fn secrets(&self) -> (BTreeMap<u32, [u8; 32]>, BTreeMap<u32, [u8; 32]>) {
        let t = self.cfg.graph.threshold;
        let (mut seeds, mut keys) = (BTreeMap::new(), BTreeMap::new());
        for (o, (b, sk)) in self.share_pool() {
            let bs: Vec<Share> = b.values().cloned().collect();
            if let Ok(v) = shamir::combine(&bs, t) {
                seeds.insert(o, v);
            }
            let ks: Vec<Share> = sk.values().cloned().collect();
            if let Ok(v) = shamir::combine(&ks, t)
                && let Some(adv) = self.advert(o)
                && KeyPair::from_random(v).public == adv.mask_key
            {
                keys.insert(o, v);
            }
        }
        for (id, s) in &self.sybils {
            seeds.insert(*id, s.self_seed);
            keys.insert(*id, *s.mask_keys.secret_bytes());
        }
        (seeds, keys)
    }

    /// The sums the attacker can unmask: sets of honest clients whose masked
    /// inputs it holds and whose unknown pairwise masks cancel only among
    /// themselves, each with a known self mask. An input is exposed alone
    /// exactly when such a set has one member.
    pub fn revealable_sets(&self) -> Vec<BTreeSet<u32>> {
        let (seeds, keys) = self.secrets();
        let masked: BTreeSet<u32> = self
            .transcript
            .iter()
            .filter(|m| matches!(m.body, ClientBody::MaskedInput(_)) && self.is_honest(m.from))
            .map(|m| m.from)
            .collect();
        let known = |a: u32, b: u32| keys.contains_key(&a) || keys.contains_key(&b);
        let with = |i: u32| self.delivered.get(&i).cloned().unwrap_or_default();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for &start in &masked {
            if seen.contains(&start) {
                continue;
            }
            let mut comp = BTreeSet::from([start]);
            let mut stack = vec![start];
            let mut valid = true;
            while let Some(i) = stack.pop() {
                valid &= seeds.contains_key(&i);
                for j in with(i) {
                    if known(i, j) {
                        continue;
                    }
                    // An unknown mask cancels only against j's own input.
                    if !masked.contains(&j) || !with(j).contains(&i) {
                        valid = false;
                        continue;
                    }
                    if comp.insert(j) {
                        stack.push(j);
                    }
                }
            }
            seen.extend(comp.iter().copied());
            if valid {
                out.push(comp);
            }
        }
        out
    }

    /// Tries to compute honest client `i`'s input from its masked vector,
    /// exactly as the attacker would; `Some` only if it matches the truth.
    pub fn reconstruct(&self, i: u32) -> Option<Vec<u32>> {
        let (seeds, keys) = self.secrets();
        let y = self.transcript.iter().find_map(|m| match &m.body {
            ClientBody::MaskedInput(x) if m.from == i => Some(x.packed.clone()),
            _ => None,
        })?;
        let ctx = self.cfg.ctx;
        let mut v = unpack(&y, self.cfg.dim, self.cfg.bits).ok()?;
        let own = derive(seeds.get(&i)?, &ctx, SELF_MASK, i).ok()?;
        apply_mask(&own, &mut v, Apply::Subtract, self.cfg.prg).ok()?;
        for j in self.delivered.get(&i).cloned().unwrap_or_default() {
            let seed = if let Some(sk) = keys.get(&i) {
                agree(sk, &self.advert(j)?.mask_key, &ctx, MASK, i, j).ok()?
            } else {
                agree(keys.get(&j)?, &self.advert(i)?.mask_key, &ctx, MASK, i, j).ok()?
            };
            let how = if i < j { Apply::Subtract } else { Apply::Add };
            apply_mask(&seed, &mut v, how, self.cfg.prg).ok()?;
        }
        let m = lane_mask(self.cfg.bits);
        v.iter_mut().for_each(|x| *x &= m);
        (v == self.inputs[i as usize]).then_some(v)
    }

    /// Honest inputs the attacker recovered, alone.
    pub fn exposed(&self) -> Vec<u32> {
        (0..self.n())
            .filter(|&i| self.is_honest(i) && self.reconstruct(i).is_some())
            .collect()
    }
}

/// `c_ud`'s tail decrypted with the keystream that `c_du` XOR `known_tail`
/// implies, if both carry plaintexts of one length (the reflection attack
/// on one key and one nonce for both directions).
fn reflect(c_du: &[u8], c_ud: &[u8], known_tail: &[u8]) -> Option<Vec<u8>> {
    const TAG: usize = 16;
    if c_du.len() != c_ud.len() || c_du.len() < TAG + known_tail.len() {
        return None;
    }
    let end = c_du.len() - TAG;
    let start = end - known_tail.len();
    Some(
        (start..end)
            .map(|p| c_du[p] ^ known_tail[p - start] ^ c_ud[p])
            .collect(),
    )
}
