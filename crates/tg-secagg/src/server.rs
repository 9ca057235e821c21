//! The server side of a round: collects each stage, routes what clients need,
//! and unmasks the sum.
//!
//! Design decision: the server never holds an individual input in the clear,
//! and its API has no way to produce one — masked inputs are added to a
//! running sum the moment they arrive and are not stored, and the only output
//! is [`AggregateSum`], built from the unmasked total. Every message is
//! verified (signature, sender, stage, shape) before it changes state; a bad
//! message is rejected without disturbing the round. The driver decides when
//! a stage closes (all expected messages in, or a deadline), so dropouts at
//! any stage are just absences.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::SecAggError;
use crate::client::{MASK, SELF_MASK};
use crate::crypto::{Apply, agree, apply_mask, derive};
use crate::messages::{
    ClientBody, Confirmation, Confirmations, ServerBody, ShareKeys, Signed, SignedCommitment,
    SignedKeys, Stage, Unmask,
};
use crate::packing::{add_packed, lane_mask};
use crate::round::RoundConfig;
use crate::shamir::{self, Share};

/// The result of a round: the sum over `survivors` of their inputs, mod 2^B.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateSum {
    /// Clients whose inputs are in the sum.
    pub survivors: Vec<u32>,
    /// Σ inputs mod 2^B, one u32 per lane.
    pub sum: Vec<u32>,
}

/// One round, server side.
pub struct Server {
    cfg: Arc<RoundConfig>,
    stage: Stage,
    advertised: BTreeMap<u32, Signed>,
    shares: BTreeMap<u32, ShareKeys>,
    masked: BTreeSet<u32>,
    /// Each survivor's signed mask commitment, and the neighbours in it.
    commitments: BTreeMap<u32, SignedCommitment>,
    sum: Vec<u32>,
    consistency: BTreeMap<u32, Signed>,
    unmask: BTreeMap<u32, Unmask>,
    survivors: Vec<u32>,
    finished: bool,
}

impl Server {
    /// A round waiting for key advertisements.
    pub fn new(cfg: Arc<RoundConfig>) -> Self {
        let dim = cfg.dim;
        Self {
            cfg,
            stage: Stage::AdvertiseKeys,
            advertised: BTreeMap::new(),
            shares: BTreeMap::new(),
            masked: BTreeSet::new(),
            commitments: BTreeMap::new(),
            sum: vec![0; dim],
            consistency: BTreeMap::new(),
            unmask: BTreeMap::new(),
            survivors: Vec::new(),
            finished: false,
        }
    }

    /// The stage being collected.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Clients expected to speak in the current stage.
    pub fn expected(&self) -> Vec<u32> {
        match self.stage {
            Stage::AdvertiseKeys => (0..self.cfg.n() as u32).collect(),
            Stage::ShareKeys => self.advertised.keys().copied().collect(),
            Stage::MaskedInput => self.shares.keys().copied().collect(),
            Stage::ConsistencyCheck => self.masked.iter().copied().collect(),
            Stage::Unmask => self.consistency.keys().copied().collect(),
        }
    }

    /// Verifies and records one client message for the current stage.
    pub fn receive(&mut self, msg: Signed) -> Result<(), SecAggError> {
        if self.finished {
            return Err(SecAggError::Rejected("the round is over".into()));
        }
        msg.verify(&self.cfg.ctx, self.cfg.identity(msg.from)?)?;
        if msg.body.stage() != self.stage {
            return Err(SecAggError::Rejected(format!(
                "message for {:?} from client {} while collecting {:?}",
                msg.body.stage(),
                msg.from,
                self.stage
            )));
        }
        if !self.expected().contains(&msg.from) {
            return Err(SecAggError::Rejected(format!(
                "client {} is not part of {:?} (it missed an earlier stage)",
                msg.from, self.stage
            )));
        }
        let from = msg.from;
        let duplicate =
            || SecAggError::Rejected(format!("second {:?} message from {from}", msg.body.stage()));
        match &msg.body {
            ClientBody::AdvertiseKeys(k) => {
                if self.advertised.contains_key(&from) {
                    return Err(duplicate());
                }
                if !crate::crypto::is_contributory(&k.share_key)
                    || !crate::crypto::is_contributory(&k.mask_key)
                {
                    // One low-order key would abort every neighbour's agreement.
                    return Err(SecAggError::Rejected(format!(
                        "client {from} advertised a low-order key"
                    )));
                }
                self.advertised.insert(from, msg);
            }
            ClientBody::ShareKeys(s) => {
                if self.shares.contains_key(&from) {
                    return Err(duplicate());
                }
                let mut seen = BTreeSet::new();
                for crate::messages::Sealed { to, .. } in &s.sealed {
                    if !self.cfg.are_neighbours(from, *to)
                        || !self.advertised.contains_key(to)
                        || !seen.insert(*to)
                    {
                        return Err(SecAggError::Rejected(format!(
                            "client {from} sent a share to {to}, which is not an advertised neighbour (or twice)"
                        )));
                    }
                }
                self.shares.insert(from, s.clone());
            }
            ClientBody::MaskedInput(m) => {
                if self.masked.contains(&from) {
                    return Err(duplicate());
                }
                let c = m.commitment.to_signed();
                c.verify(&self.cfg.ctx, self.cfg.identity(from)?)?;
                let mc = &m.commitment.commitment;
                let held = |j: &u32| {
                    self.shares
                        .get(j)
                        .is_some_and(|s| s.sealed.iter().any(|p| p.to == from))
                };
                if c.from != from
                    || !mc.masked_with.windows(2).all(|w| w[0] < w[1])
                    || !mc.masked_with.iter().all(held)
                {
                    return Err(SecAggError::Rejected(format!(
                        "client {from}'s mask commitment names neighbours whose shares it was not sent"
                    )));
                }
                // Added at once and not kept: no individual vector is stored.
                add_packed(&mut self.sum, &m.packed, self.cfg.bits)?;
                self.masked.insert(from);
                self.commitments.insert(from, (*m.commitment).clone());
            }
            ClientBody::ConsistencyCheck(c) => {
                if self.consistency.contains_key(&from) {
                    return Err(duplicate());
                }
                if c.survivors != self.survivors {
                    return Err(SecAggError::Rejected(format!(
                        "client {from} signed a survivor set other than the one announced"
                    )));
                }
                self.consistency.insert(from, msg);
            }
            ClientBody::MaskCommitment(_) => {
                return Err(SecAggError::Rejected(format!(
                    "client {from} sent a mask commitment outside its masked input"
                )));
            }
            ClientBody::Unmask(u) => {
                if self.unmask.contains_key(&from) {
                    return Err(duplicate());
                }
                let dropped_ok = |o: &u32| self.shares.contains_key(o) && !self.masked.contains(o);
                // The revealer must have been sent the owner's shares.
                let held = |o: &u32| {
                    self.shares
                        .get(o)
                        .is_some_and(|s| s.sealed.iter().any(|p| p.to == from))
                };
                let mut owners = BTreeSet::new();
                let valid = u.self_mask_shares.iter().all(|(o, s)| {
                    self.masked.contains(o)
                        && held(o)
                        && owners.insert(*o)
                        && s.x == RoundConfig::point(from)
                }) && u.mask_key_shares.iter().all(|(o, s)| {
                    dropped_ok(o) && held(o) && owners.insert(*o) && s.x == RoundConfig::point(from)
                });
                if !valid {
                    return Err(SecAggError::Rejected(format!(
                        "client {from} revealed shares that do not match the survivor set"
                    )));
                }
                self.unmask.insert(from, u.clone());
            }
        }
        Ok(())
    }

    fn below_threshold(&self, what: &str, have: usize) -> Result<(), SecAggError> {
        let t = self.cfg.graph.threshold;
        if have < t {
            return Err(SecAggError::Protocol(format!(
                "{have} clients {what}, below the threshold {t}: the round fails and reveals nothing"
            )));
        }
        Ok(())
    }

    /// Closes the current stage and returns what each remaining client needs
    /// for the next one. Fails (revealing nothing) below the threshold.
    pub fn close_stage(&mut self) -> Result<Vec<(u32, ServerBody)>, SecAggError> {
        let out = match self.stage {
            Stage::AdvertiseKeys => {
                self.below_threshold("advertised keys", self.advertised.len())?;
                self.stage = Stage::ShareKeys;
                self.advertised
                    .keys()
                    .map(|&i| {
                        let keys = self
                            .cfg
                            .graph
                            .neighbours(i as usize)
                            .into_iter()
                            .filter_map(|j| self.advertised.get(&(j as u32)).cloned())
                            .filter_map(SignedKeys::from_signed)
                            .collect();
                        (i, ServerBody::NeighbourKeys(keys))
                    })
                    .collect()
            }
            Stage::ShareKeys => {
                self.below_threshold("shared their keys", self.shares.len())?;
                self.stage = Stage::MaskedInput;
                self.shares
                    .keys()
                    .map(|&j| {
                        let mine = self
                            .shares
                            .iter()
                            .filter_map(|(&from, s)| {
                                s.sealed
                                    .iter()
                                    .find(|p| p.to == j)
                                    .map(|p| (from, p.clone()))
                            })
                            .collect();
                        (j, ServerBody::SharesForYou(mine))
                    })
                    .collect()
            }
            Stage::MaskedInput => {
                self.below_threshold("sent masked inputs", self.masked.len())?;
                self.stage = Stage::ConsistencyCheck;
                self.survivors = self.masked.iter().copied().collect();
                self.survivors
                    .iter()
                    .map(|&i| (i, ServerBody::Survivors(self.survivors.clone())))
                    .collect()
            }
            Stage::ConsistencyCheck => {
                self.below_threshold("confirmed the survivor set", self.consistency.len())?;
                self.stage = Stage::Unmask;
                // Each client needs its neighbours' confirmations (SecAgg+: k, not n).
                self.consistency
                    .keys()
                    .map(|&i| {
                        let signatures = self
                            .consistency
                            .iter()
                            .filter(|(j, _)| self.cfg.are_neighbours(i, **j))
                            .map(|(_, m)| Confirmation {
                                from: m.from,
                                signature: m.signature,
                            })
                            .collect();
                        let commitments = self
                            .commitments
                            .iter()
                            .filter(|(j, _)| self.cfg.are_neighbours(i, **j))
                            .map(|(_, c)| c.clone())
                            .collect();
                        (
                            i,
                            ServerBody::SurvivorSignatures(Confirmations {
                                signatures,
                                commitments,
                            }),
                        )
                    })
                    .collect()
            }
            Stage::Unmask => {
                return Err(SecAggError::Protocol(
                    "the unmask stage is closed by finish()".into(),
                ));
            }
        };
        Ok(out)
    }

    /// Unmasks the sum from the revealed shares.
    pub fn finish(mut self, threads: usize) -> Result<AggregateSum, SecAggError> {
        if self.stage != Stage::Unmask {
            return Err(SecAggError::Protocol(format!(
                "finish() called while collecting {:?}",
                self.stage
            )));
        }
        self.finished = true;
        let t = self.cfg.graph.threshold;
        let ctx = self.cfg.ctx;
        let collect = |owner: u32,
                       pick: fn(&Unmask) -> &[(u32, Share)]|
         -> Result<[u8; 32], SecAggError> {
            let shares: Vec<Share> = self
                .unmask
                .values()
                .flat_map(|u| {
                    pick(u)
                        .iter()
                        .filter(|(o, _)| *o == owner)
                        .map(|(_, s)| s.clone())
                })
                .take(t)
                .collect();
            shamir::combine(&shares, t).map_err(|_| {
                SecAggError::Protocol(format!(
                    "only {} shares for client {owner}, the threshold is {t}: the round fails and reveals nothing",
                    shares.len()
                ))
            })
        };
        // Every mask to remove, with its sign.
        let mut jobs: Vec<([u8; 32], Apply)> = Vec::new();
        for &i in &self.survivors {
            let seed = zeroize::Zeroizing::new(collect(i, |u| &u.self_mask_shares)?);
            jobs.push((*derive(&seed, &ctx, SELF_MASK, i)?, Apply::Subtract));
        }
        let dropped: Vec<u32> = self
            .shares
            .keys()
            .copied()
            .filter(|d| !self.masked.contains(d))
            .collect();
        for d in dropped {
            let secret = zeroize::Zeroizing::new(collect(d, |u| &u.mask_key_shares)?);
            for &j in &self.survivors {
                // j masked with d iff its commitment says so.
                let masked_with = self
                    .commitments
                    .get(&j)
                    .map(|c| c.commitment.masked_with.as_slice());
                if masked_with.is_none_or(|w| w.binary_search(&d).is_err()) {
                    continue;
                }
                let ClientBody::AdvertiseKeys(k) = &self.advertised[&j].body else {
                    continue;
                };
                let seed = agree(&secret, &k.mask_key, &ctx, MASK, j, d)?;
                // j added PRG(s_jd) if j < d, subtracted it otherwise: undo that.
                jobs.push((*seed, if j < d { Apply::Subtract } else { Apply::Add }));
            }
        }
        let mut sum = std::mem::take(&mut self.sum);
        let total = expand_all(&jobs, self.cfg.dim, threads, self.cfg.prg)?;
        sum.iter_mut()
            .zip(&total)
            .for_each(|(s, m)| *s = s.wrapping_add(*m));
        let mask = lane_mask(self.cfg.bits);
        sum.iter_mut().for_each(|v| *v &= mask);
        Ok(AggregateSum {
            survivors: self.survivors.clone(),
            sum,
        })
    }
}

/// Σ ±PRG(seed) over all jobs, split across `threads` threads.
fn expand_all(
    jobs: &[([u8; 32], Apply)],
    dim: usize,
    threads: usize,
    prg: crate::crypto::Prg,
) -> Result<Vec<u32>, SecAggError> {
    let threads = threads.clamp(1, jobs.len().max(1));
    let per = jobs.len().div_ceil(threads).max(1);
    let partials: Vec<Result<Vec<u32>, SecAggError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(per)
            .map(|chunk| {
                scope.spawn(move || {
                    let mut acc = vec![0u32; dim];
                    for (seed, how) in chunk {
                        apply_mask(seed, &mut acc, *how, prg)?;
                    }
                    Ok(acc)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(SecAggError::Protocol("an unmasking thread panicked".into()))
                })
            })
            .collect()
    });
    let mut total = vec![0u32; dim];
    for p in partials {
        let p = p?;
        total
            .iter_mut()
            .zip(&p)
            .for_each(|(t, v)| *t = t.wrapping_add(*v));
    }
    Ok(total)
}
