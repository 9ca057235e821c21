//! Update compression: every encoder an update goes through before it
//! leaves an agent, for plaintext and secure rounds alike.
//!
//! Design decision: a compressed update is never decompressed into a dense
//! copy. Its borrowed wire form ([`CompressedView`]), laid out by the global
//! model ([`Shaped`]), implements [`tg_types::view::Lanes`], so the
//! coordinator's streaming fold reads it lane by lane straight from the frame
//! — the same fold, the same exact sum, as a dense update. Encoders are
//! deterministic, so a run is reproducible from its seed.
//!
//! - **Top-k with error feedback** ([`Compression::TopK`]): an agent sends the
//!   `⌈F·d⌉` coordinates of largest magnitude of (update + carried residual)
//!   and carries the rest into its next round (Stich et al. 2018), so nothing
//!   is lost, only delayed. Memory: one `f32` per parameter on the agent.
//!   Indices travel as LEB128 gaps, values as `f32`.
//! - **8-bit blocks** ([`Compression::Q8`]): one `f32` scale (absmax / 127)
//!   per 256 values and a signed byte per value: ~3.9× smaller than `f32`.
//!
//! - **Modular encoding for secure sums** ([`modular::Encoding`]): clip,
//!   randomized Hadamard rotation, scale, stochastic rounding, optional
//!   integer noise, mod 2^B — lanes that SecAgg+ (tg-secagg) adds without
//!   learning them, and that decode to the real sum.
//! - **Shared random-k** ([`shared_random_k`]): the same `⌈F·d⌉`
//!   coordinates for every agent of a round, drawn from its public seed, so
//!   masks still cancel.
//! - **zstd for downloads** ([`download`]): what the coordinator sends
//!   agents, packed once, unpacked within a bound.

pub mod download;
pub mod modular;
mod q8;
mod topk;
mod view;

pub use modular::{EncodeError, Encoding};

use serde::{Deserialize, Serialize};
use tg_types::Parameters;
pub use tg_types::spec::Compression;
use tg_types::view::{bytes_owned, f32_le};

pub use view::{BodyView, CompressedView, Shaped};

/// Values per 8-bit block (one scale each).
pub const Q8_BLOCK: u32 = 256;

/// A compressed update as it is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Compressed {
    /// Values the update stands for (the model's parameter count).
    pub len: u64,
    /// The encoding.
    pub body: Body,
}

/// The encodings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Body {
    /// Sparse: increasing indices as LEB128 gaps (the first from 0), values.
    TopK {
        /// Gaps between successive indices.
        #[serde(with = "bytes_owned")]
        gaps: Vec<u8>,
        /// The values at those indices.
        #[serde(with = "f32_le")]
        values: Vec<f32>,
    },
    /// 8-bit codes, one scale per `block` values.
    Q8 {
        /// Values per scale.
        block: u32,
        /// `absmax / 127` of each block.
        #[serde(with = "f32_le")]
        scales: Vec<f32>,
        /// One signed byte per value.
        #[serde(with = "bytes_owned")]
        codes: Vec<u8>,
    },
}

/// An agent's compressor: holds top-k's residual between rounds.
#[derive(Clone, Debug, Default)]
pub struct Compressor {
    residual: Vec<f32>,
}

impl Compressor {
    /// `update` in the form `c` asks for, or `None` for dense.
    pub fn encode(&mut self, update: &Parameters, c: Compression) -> Option<Compressed> {
        match c {
            Compression::TopK(fraction) => Some(topk::encode(update, fraction, &mut self.residual)),
            Compression::Q8 => Some(q8::encode(update, Q8_BLOCK)),
            _ => None,
        }
    }

    /// The residual top-k carries (empty before the first round).
    pub fn residual(&self) -> &[f32] {
        &self.residual
    }
}

#[cfg(test)]
mod tests;

/// The coordinates every agent sends in a round with shared random-k
/// sparsification: `⌈fraction·params⌉` of `0..params`, ascending, drawn from
/// `seed` (public, so every party draws the same). All of them when
/// `fraction` is not in (0, 1).
pub fn shared_random_k(params: usize, fraction: f64, seed: [u8; 32]) -> Vec<usize> {
    use rand_core::{RngCore, SeedableRng};
    if !(fraction > 0.0 && fraction < 1.0) || params == 0 {
        return (0..params).collect();
    }
    let k = ((fraction * params as f64).ceil() as usize).clamp(1, params);
    // Partial Fisher–Yates on a ChaCha20 stream.
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
    let mut idx: Vec<usize> = (0..params).collect();
    for i in 0..k {
        let j = i + (rng.next_u64() % (params - i) as u64) as usize;
        idx.swap(i, j);
    }
    let mut chosen = idx[..k].to_vec();
    chosen.sort_unstable();
    chosen
}
