//! What every party of one secure-aggregation round agrees on up front.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;

use crate::SecAggError;
use crate::crypto::Context;
use crate::graph::GraphParams;

/// The public parameters of a round: who takes part (by identity), the mask
/// graph and threshold, the vector length and the bit width B.
#[derive(Clone, Debug)]
pub struct RoundConfig {
    /// Job and round, bound into every key and signature.
    pub ctx: Context,
    /// Mask graph and Shamir threshold.
    pub graph: GraphParams,
    /// Lanes per input vector.
    pub dim: usize,
    /// Bits per lane: arithmetic is mod 2^B.
    pub bits: u32,
    /// Ed25519 identity of each participant, by round index.
    pub identities: Vec<VerifyingKey>,
    /// Fewest survivors for which honest clients unmask (at least the
    /// threshold; more when distributed DP noise must come from that many).
    pub min_survivors: usize,
    /// Mask generator every party uses.
    pub prg: crate::crypto::Prg,
}

impl RoundConfig {
    /// A round over `identities` (index = position), sized for the assumed
    /// corrupt and dropout fractions.
    pub fn new(
        ctx: Context,
        identities: Vec<VerifyingKey>,
        dim: usize,
        bits: u32,
        corrupt: f64,
        dropout: f64,
    ) -> Result<Arc<Self>, SecAggError> {
        if !(1..=32).contains(&bits) {
            return Err(SecAggError::Params(format!(
                "bit width B = {bits} must be in 1..=32"
            )));
        }
        if dim == 0 {
            return Err(SecAggError::Params(
                "vectors must have at least one lane".into(),
            ));
        }
        let graph = GraphParams::find(identities.len(), corrupt, dropout)?;
        Ok(Arc::new(Self {
            ctx,
            graph,
            dim,
            bits,
            identities,
            min_survivors: graph.threshold,
            prg: crate::crypto::Prg::default(),
        }))
    }

    /// The same round with another mask generator.
    pub fn with_prg(self: Arc<Self>, prg: crate::crypto::Prg) -> Arc<Self> {
        let mut cfg = (*self).clone();
        cfg.prg = prg;
        Arc::new(cfg)
    }

    /// The same round, refusing to unmask with fewer than `min` survivors.
    pub fn with_min_survivors(self: Arc<Self>, min: usize) -> Arc<Self> {
        let mut cfg = (*self).clone();
        cfg.min_survivors = min.max(cfg.graph.threshold);
        Arc::new(cfg)
    }

    /// Number of participants.
    pub fn n(&self) -> usize {
        self.identities.len()
    }

    /// The identity of participant `i`, if it exists.
    pub fn identity(&self, i: u32) -> Result<&VerifyingKey, SecAggError> {
        self.identities
            .get(i as usize)
            .ok_or_else(|| SecAggError::Rejected(format!("no participant {i} in this round")))
    }

    /// Whether `a` and `b` share masks.
    pub fn are_neighbours(&self, a: u32, b: u32) -> bool {
        a != b && self.graph.neighbours(a as usize).contains(&(b as usize))
    }

    /// The Shamir evaluation point of holder `i`.
    pub fn point(i: u32) -> u64 {
        u64::from(i) + 1
    }
}
