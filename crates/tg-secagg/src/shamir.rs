//! Shamir secret sharing of 32-byte secrets over the prime field GF(2⁶¹ − 1).
//!
//! Design decision: secrets here are 32-byte seeds and keys, never files, so
//! a secret is cut into five chunks of at most 56 bits, each shared with its
//! own random polynomial of degree t − 1 over GF(p), p = 2⁶¹ − 1 (a Mersenne
//! prime: reduction is a shift and an add, products fit in u128). Any t − 1
//! shares are uniformly distributed whatever the secret (information-
//! theoretic hiding per chunk); any t shares reconstruct it by Lagrange
//! interpolation at 0, using exactly t shares.

use rand_core::CryptoRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::SecAggError;

/// The field modulus 2⁶¹ − 1.
pub const P: u64 = (1 << 61) - 1;
/// Bytes of secret per field element.
const CHUNK: usize = 7;
/// Field elements per 32-byte secret.
pub const CHUNKS: usize = 32usize.div_ceil(CHUNK);

/// x mod p, using 2⁶¹ ≡ 1: fold the high bits onto the low ones.
fn reduce(x: u128) -> u64 {
    let p = u128::from(P);
    let hi = x >> 61;
    let mut r = (x & p) + (hi & p) + (hi >> 61); // < 2⁶³
    while r >= p {
        r -= p;
    }
    r as u64
}

fn add(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P { s - P } else { s }
}

fn sub(a: u64, b: u64) -> u64 {
    if a >= b { a - b } else { a + P - b }
}

fn mul(a: u64, b: u64) -> u64 {
    reduce(u128::from(a) * u128::from(b))
}

fn pow(mut b: u64, mut e: u64) -> u64 {
    let mut acc = 1;
    while e > 0 {
        if e & 1 == 1 {
            acc = mul(acc, b);
        }
        b = mul(b, b);
        e >>= 1;
    }
    acc
}

fn inv(a: u64) -> u64 {
    pow(a, P - 2)
}

/// A uniform field element, by rejection.
fn random_element(rng: &mut impl CryptoRng) -> u64 {
    loop {
        let v = rng.next_u64() & P; // 61 bits
        if v < P {
            return v;
        }
    }
}

/// One holder's share of a 32-byte secret: the polynomials evaluated at `x`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Share {
    /// Evaluation point (≥ 1, distinct per holder).
    pub x: u64,
    /// One value per chunk.
    pub y: [u64; CHUNKS],
}

/// Splits `secret` into shares for the evaluation points `xs` (distinct,
/// non-zero, < p), any `threshold` of which reconstruct it.
pub fn split(
    secret: &[u8; 32],
    threshold: usize,
    xs: &[u64],
    rng: &mut impl CryptoRng,
) -> Result<Vec<Share>, SecAggError> {
    if threshold == 0 || threshold > xs.len() {
        return Err(SecAggError::Params(format!(
            "Shamir threshold {threshold} must be between 1 and the {} holders",
            xs.len()
        )));
    }
    check_points(xs)?;
    let mut coeffs = vec![[0u64; CHUNKS]; threshold];
    for (c, chunk) in secret.chunks(CHUNK).enumerate() {
        let mut v = [0u8; 8];
        v[..chunk.len()].copy_from_slice(chunk);
        coeffs[0][c] = u64::from_le_bytes(v);
        for row in coeffs.iter_mut().skip(1) {
            row[c] = random_element(rng);
        }
    }
    let shares = xs
        .iter()
        .map(|&x| {
            let mut y = [0u64; CHUNKS];
            for (c, yc) in y.iter_mut().enumerate() {
                // Horner from the highest coefficient.
                *yc = coeffs
                    .iter()
                    .rev()
                    .fold(0, |acc, row| add(mul(acc, x), row[c]));
            }
            Share { x, y }
        })
        .collect();
    coeffs.zeroize();
    Ok(shares)
}

/// Reconstructs a secret from exactly `threshold` of `shares` (the first
/// `threshold` given).
pub fn combine(shares: &[Share], threshold: usize) -> Result<[u8; 32], SecAggError> {
    if threshold == 0 || shares.len() < threshold {
        return Err(SecAggError::Reconstruction(format!(
            "{} shares given, {threshold} needed",
            shares.len()
        )));
    }
    let used = &shares[..threshold];
    let xs: Vec<u64> = used.iter().map(|s| s.x).collect();
    check_points(&xs)?;
    // Lagrange basis at 0: l_j = Π_{m≠j} x_m / (x_m − x_j).
    let basis: Vec<u64> = xs
        .iter()
        .enumerate()
        .map(|(j, &xj)| {
            let (num, den) = xs
                .iter()
                .enumerate()
                .filter(|(m, _)| *m != j)
                .fold((1u64, 1u64), |(num, den), (_, &xm)| {
                    (mul(num, xm), mul(den, sub(xm, xj)))
                });
            mul(num, inv(den))
        })
        .collect();
    let mut secret = [0u8; 32];
    for c in 0..CHUNKS {
        let v = used
            .iter()
            .zip(&basis)
            .fold(0, |acc, (s, &l)| add(acc, mul(s.y[c], l)));
        let bytes = v.to_le_bytes();
        let start = c * CHUNK;
        let len = CHUNK.min(32 - start);
        if bytes[len..].iter().any(|&b| b != 0) {
            secret.zeroize();
            return Err(SecAggError::Reconstruction(
                "shares are inconsistent (a chunk decodes out of range)".into(),
            ));
        }
        secret[start..start + len].copy_from_slice(&bytes[..len]);
    }
    Ok(secret)
}

fn check_points(xs: &[u64]) -> Result<(), SecAggError> {
    for (i, &x) in xs.iter().enumerate() {
        if x == 0 || x >= P {
            return Err(SecAggError::Params(format!(
                "Shamir evaluation point {x} must be in [1, p)"
            )));
        }
        if xs[..i].contains(&x) {
            return Err(SecAggError::Params(format!(
                "Shamir evaluation point {x} is repeated"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn field_arithmetic_known_answers() {
        assert_eq!(mul(P - 1, P - 1), 1); // (−1)² = 1
        assert_eq!(mul(1 << 60, 2), 1); // 2⁶¹ ≡ 1
        assert_eq!(mul(inv(12345), 12345), 1);
        assert_eq!(sub(0, 1), P - 1);
        assert_eq!(add(P - 1, 5), 4);
        assert_eq!(reduce(u128::MAX), (u128::MAX % u128::from(P)) as u64);
    }

    #[test]
    fn known_answer_polynomial() {
        // A constant-free check: with threshold 1 every share is the secret itself.
        let secret = [7u8; 32];
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        let shares = split(&secret, 1, &[1, 2, 3], &mut rng).unwrap();
        let first = u64::from_le_bytes([7, 7, 7, 7, 7, 7, 7, 0]);
        assert!(shares.iter().all(|s| s.y[0] == first));
        // f(x) = s + 3x for one chunk, evaluated by hand: Lagrange at 0 from (1, s+3), (2, s+6).
        let s = 1000u64;
        let combined = [
            Share {
                x: 1,
                y: [s + 3, 0, 0, 0, 0],
            },
            Share {
                x: 2,
                y: [s + 6, 0, 0, 0, 0],
            },
        ];
        let got = combine(&combined, 2).unwrap();
        assert_eq!(
            u64::from_le_bytes(got[..8].try_into().unwrap()) & ((1 << 56) - 1),
            s
        );
    }

    proptest! {
        #[test]
        fn any_t_shares_reconstruct(seed: u64, secret: [u8; 32], n in 2usize..30, t_frac in 0.0f64..1.0) {
            let t = 1 + ((n - 1) as f64 * t_frac) as usize;
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let xs: Vec<u64> = (1..=n as u64).map(|x| x * 7919).collect();
            let mut shares = split(&secret, t, &xs, &mut rng).unwrap();
            // Any subset: rotate by the seed.
            shares.rotate_left(seed as usize % n);
            prop_assert_eq!(combine(&shares, t).unwrap(), secret);
            prop_assert!(combine(&shares[..t - 1], t).is_err());
        }

        #[test]
        fn fewer_than_t_shares_are_consistent_with_any_secret(seed: u64, a: [u8; 32], b: [u8; 32]) {
            // t = 3: two shares of a, plus the point (0, b), lie on a degree-2
            // polynomial; its value at x = 3 completes a share set for b. So
            // two shares say nothing about the secret.
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let sa = split(&a, 3, &[1, 2, 3], &mut rng).unwrap();
            let chunks = |s: &[u8; 32]| -> [u64; CHUNKS] {
                let mut out = [0u64; CHUNKS];
                for (c, chunk) in s.chunks(CHUNK).enumerate() {
                    let mut v = [0u8; 8];
                    v[..chunk.len()].copy_from_slice(chunk);
                    out[c] = u64::from_le_bytes(v);
                }
                out
            };
            let bc = chunks(&b);
            let pts = [0u64, 1, 2];
            let mut y3 = [0u64; CHUNKS];
            for c in 0..CHUNKS {
                let ys = [bc[c], sa[0].y[c], sa[1].y[c]];
                // Lagrange evaluation at x = 3.
                y3[c] = (0..3).fold(0, |acc, j| {
                    let (num, den) = (0..3).filter(|&m| m != j).fold((1, 1), |(n, d), m| {
                        (mul(n, sub(3, pts[m])), mul(d, sub(pts[j], pts[m])))
                    });
                    add(acc, mul(ys[j], mul(num, inv(den))))
                });
            }
            let forged = [sa[0].clone(), sa[1].clone(), Share { x: 3, y: y3 }];
            prop_assert_eq!(combine(&forged, 3).unwrap(), b);
        }
    }

    #[test]
    fn bad_points_and_thresholds_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let s = [1u8; 32];
        assert!(split(&s, 0, &[1, 2], &mut rng).is_err());
        assert!(split(&s, 3, &[1, 2], &mut rng).is_err());
        assert!(split(&s, 2, &[0, 2], &mut rng).is_err());
        assert!(split(&s, 2, &[2, 2], &mut rng).is_err());
        assert!(split(&s, 2, &[P, 2], &mut rng).is_err());
    }
}
