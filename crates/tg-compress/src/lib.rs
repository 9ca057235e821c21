//! Update compression for plaintext rounds.
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
//! Secure rounds have their own encoding (clip, rotate, quantise mod 2^B,
//! shared random-k) inside `tg-secagg`.

mod q8;
mod topk;
mod view;

use serde::{Deserialize, Serialize};
use tg_types::Parameters;
pub use tg_types::spec::Compression;
use tg_types::view::{bytes_owned, f32_le};

pub use view::{CompressedView, Shaped};

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
