//! Real vectors to lanes of Z_2^B and back.
//!
//! Design decision: the pipeline of Kairouz et al. (2021) — clip to L2 norm
//! C, randomized Hadamard rotation (signs from a *public* per-round seed, so
//! every client rotates alike and the server can undo it), scale by s,
//! unbiased stochastic rounding with the client's private randomness,
//! optional integer noise, then wrap mod 2^B. The rotation spreads a vector's
//! mass evenly over coordinates, so each rotated coordinate is at most
//! ~K·C/√D with overwhelming probability; s is chosen so that `max_clients`
//! such coordinates sum inside ±2^(B−1) — no wrap-around — and a coordinate
//! beyond K·C/√D is clamped before noise (which only shrinks the vector).

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};

/// Why a vector could not be encoded, or an encoding not built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The parameters or the vector do not fit the encoding.
    #[error("{0}")]
    Params(String),
    /// The noise source failed.
    #[error("noise: {0}")]
    Noise(String),
}

/// The low `bits` bits set: lanes live in Z_2^bits.
pub fn lane_mask(bits: u32) -> u32 {
    if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    }
}

/// Standard deviations of a rotated coordinate kept before clamping.
const K: f64 = 6.0;

/// How a round encodes updates.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoding {
    /// Length of the real vector.
    pub dim: usize,
    /// Rotated length: the next power of two.
    pub padded: usize,
    /// Bits per lane.
    pub bits: u32,
    /// L2 clipping norm C.
    pub clip: f64,
    /// Scale s from reals to integers.
    pub scale: f64,
    /// Per-client bound on a rotated, scaled coordinate before noise.
    pub bound: i64,
    /// Public seed of the rotation's random signs.
    pub rotation_seed: [u8; 32],
}

impl Encoding {
    /// An encoding for sums of at most `max_clients` vectors of length `dim`
    /// clipped to `clip`, with `noise_std` of integer noise per client
    /// (0 without DP), in `bits`-bit lanes.
    pub fn new(
        dim: usize,
        bits: u32,
        clip: f64,
        max_clients: usize,
        noise_std: f64,
        rotation_seed: [u8; 32],
    ) -> Result<Self, EncodeError> {
        if dim == 0 || !(2..=32).contains(&bits) || max_clients == 0 {
            return Err(EncodeError::Params(format!(
                "encoding needs dim ≥ 1, 2 ≤ B ≤ 32 and at least one client (got {dim}, {bits}, {max_clients})"
            )));
        }
        if !(clip > 0.0 && clip.is_finite() && noise_std >= 0.0 && noise_std.is_finite()) {
            return Err(EncodeError::Params(format!(
                "clip ({clip}) must be positive and noise ({noise_std}) non-negative"
            )));
        }
        let padded = dim.next_power_of_two();
        // Each client's lane must stay within ±half/max_clients, noise included.
        let half = f64::from(lane_mask(bits - 1));
        let per_client = half / max_clients as f64;
        let noise_room = K * noise_std * (max_clients as f64).sqrt() / max_clients as f64;
        let room = per_client - noise_room;
        let coord = K * clip / (padded as f64).sqrt();
        if !(room >= 1.0) {
            return Err(EncodeError::Params(format!(
                "{bits} bits cannot hold the sum of {max_clients} clients with noise σ = {noise_std}: \
                 use more bits or fewer clients per round"
            )));
        }
        let scale = room / coord;
        Ok(Self {
            dim,
            padded,
            bits,
            clip,
            scale,
            bound: room.floor() as i64,
            rotation_seed,
        })
    }

    /// The same encoding at a given (smaller or equal) scale: the scale a
    /// privacy ledger charged for, pinned across rounds. A larger scale than
    /// this encoding's room allows is refused (the sum could wrap).
    pub fn with_scale(mut self, scale: f64) -> Result<Self, EncodeError> {
        if !(scale > 0.0 && scale.is_finite() && scale <= self.scale * (1.0 + 1e-12)) {
            return Err(EncodeError::Params(format!(
                "scale {scale} does not fit this round's encoding (at most {})",
                self.scale
            )));
        }
        self.scale = scale;
        Ok(self)
    }

    fn signs(&self) -> Vec<f64> {
        let mut rng = ChaCha20Rng::from_seed(self.rotation_seed);
        let mut out = Vec::with_capacity(self.padded);
        while out.len() < self.padded {
            let w = rng.next_u64();
            for b in 0..64 {
                if out.len() == self.padded {
                    break;
                }
                out.push(if (w >> b) & 1 == 1 { -1.0 } else { 1.0 });
            }
        }
        out
    }

    /// Clips, rotates, scales and rounds `x`; `noise` adds each client's
    /// integer noise share (None without DP). Returns lanes mod 2^B.
    pub fn encode(
        &self,
        x: &[f32],
        rng: &mut impl CryptoRng,
        mut noise: Option<&mut dyn FnMut() -> Result<i64, EncodeError>>,
    ) -> Result<Vec<u32>, EncodeError> {
        if x.len() != self.dim {
            return Err(EncodeError::Params(format!(
                "vector has {} values, the encoding expects {}",
                x.len(),
                self.dim
            )));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(EncodeError::Params("vector has non-finite values".into()));
        }
        let norm = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        let c = if norm > self.clip {
            self.clip / norm
        } else {
            1.0
        };
        let mut v = vec![0.0f64; self.padded];
        let signs = self.signs();
        for ((o, x), s) in v.iter_mut().zip(x).zip(&signs) {
            *o = f64::from(*x) * c * s;
        }
        hadamard(&mut v);
        let mask = lane_mask(self.bits);
        let mut out = Vec::with_capacity(self.padded);
        for y in v {
            let scaled = (y * self.scale).clamp(-(self.bound as f64), self.bound as f64);
            // Unbiased stochastic rounding with 53-bit private randomness.
            let floor = scaled.floor();
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let mut k = floor as i64 + i64::from(u < scaled - floor);
            if let Some(n) = noise.as_mut() {
                k += n()?;
            }
            out.push((k as u32) & mask);
        }
        Ok(out)
    }

    /// Turns a sum of encoded vectors (mod 2^B) back into the real sum.
    pub fn decode_sum(&self, sum: &[u32]) -> Result<Vec<f32>, EncodeError> {
        if sum.len() != self.padded {
            return Err(EncodeError::Params(format!(
                "sum has {} lanes, the encoding produces {}",
                sum.len(),
                self.padded
            )));
        }
        let half = 1i64 << (self.bits - 1);
        let modulus = 1i64 << self.bits;
        let mut v: Vec<f64> = sum
            .iter()
            .map(|&u| {
                let u = i64::from(u);
                (if u >= half { u - modulus } else { u }) as f64 / self.scale
            })
            .collect();
        hadamard(&mut v); // the normalised transform is its own inverse
        let signs = self.signs();
        Ok(v.iter()
            .zip(&signs)
            .take(self.dim)
            .map(|(y, s)| (y * s) as f32)
            .collect())
    }
}

/// In-place normalised fast Walsh–Hadamard transform (length a power of two).
pub fn hadamard(v: &mut [f64]) {
    let n = v.len();
    let mut h = 1;
    while h < n {
        for block in v.chunks_mut(2 * h) {
            let (a, b) = block.split_at_mut(h);
            for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                let (s, d) = (*x + *y, *x - *y);
                *x = s;
                *y = d;
            }
        }
        h *= 2;
    }
    let norm = 1.0 / (n as f64).sqrt();
    v.iter_mut().for_each(|x| *x *= norm);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{ProptestConfig, prop_assert, proptest};

    #[test]
    fn hadamard_known_answer_and_involution() {
        let mut v = vec![1.0, 0.0, 0.0, 0.0];
        hadamard(&mut v);
        assert_eq!(v, vec![0.5, 0.5, 0.5, 0.5]);
        let mut w = vec![1.0, 2.0, 3.0, 4.0];
        hadamard(&mut w);
        // H₄·(1,2,3,4)/2 = (5, −1, −2, 0).
        assert_eq!(w, vec![5.0, -1.0, -2.0, 0.0]);
        hadamard(&mut w);
        assert!(
            w.iter()
                .zip([1.0, 2.0, 3.0, 4.0])
                .all(|(a, b)| (a - b).abs() < 1e-12)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]
        #[test]
        fn sums_decode_to_the_real_sum(seed: u64, dim in 1usize..300, n in 1usize..20, bits in 12u32..=32) {
            let enc = Encoding::new(dim, bits, 10.0, n, 0.0, [seed as u8; 32]).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let xs: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..dim).map(|_| ((rng.next_u32() % 2001) as f32 - 1000.0) / 1000.0).collect())
                .collect();
            let mut sum = vec![0u32; enc.padded];
            let mut want = vec![0f64; dim];
            for x in &xs {
                let norm = x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
                let c = if norm > 10.0 { 10.0 / norm } else { 1.0 };
                want.iter_mut().zip(x).for_each(|(w, v)| *w += f64::from(*v) * c);
                let e = enc.encode(x, &mut rng, None).unwrap();
                sum.iter_mut().zip(&e).for_each(|(s, v)| *s = s.wrapping_add(*v));
            }
            let mask = lane_mask(bits);
            sum.iter_mut().for_each(|v| *v &= mask);
            let got = enc.decode_sum(&sum).unwrap();
            // Rounding error: ≤ 1/s per rotated coordinate per client.
            let tol = 4.0 * n as f64 / enc.scale + 1e-5;
            for (g, w) in got.iter().zip(&want) {
                prop_assert!((f64::from(*g) - w).abs() <= tol.max(1e-3 * w.abs()), "{} vs {} (tol {})", g, w, tol);
            }
        }
    }

    #[test]
    fn too_few_bits_are_refused() {
        assert!(Encoding::new(10, 4, 1.0, 100, 0.0, [0; 32]).is_err());
        assert!(Encoding::new(10, 20, 0.0, 10, 0.0, [0; 32]).is_err());
        let enc = Encoding::new(3, 16, 1.0, 2, 0.0, [0; 32]).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        assert!(enc.encode(&[1.0, f32::NAN, 0.0], &mut rng, None).is_err());
        assert!(enc.encode(&[1.0], &mut rng, None).is_err());
    }
}
