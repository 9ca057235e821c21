//! B-bit lanes packed into bytes: a masked vector costs d·B/8 bytes on the wire.

use crate::SecAggError;

/// Packs the low `bits` of each value, little-endian bit order.
pub fn pack(values: &[u32], bits: u32) -> Vec<u8> {
    let mask = lane_mask(bits);
    let mut out = Vec::with_capacity((values.len() * bits as usize).div_ceil(8));
    let (mut acc, mut filled) = (0u64, 0u32);
    for &v in values {
        acc |= u64::from(v & mask) << filled;
        filled += bits;
        while filled >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            filled -= 8;
        }
    }
    if filled > 0 {
        out.push(acc as u8);
    }
    out
}

/// Checks that `bytes` is exactly `len` lanes of `bits` bits with zero padding.
fn check(bytes: &[u8], len: usize, bits: u32) -> Result<(), SecAggError> {
    let total = len * bits as usize;
    let want = total.div_ceil(8);
    if bytes.len() != want {
        return Err(SecAggError::Rejected(format!(
            "masked input has {} bytes, expected {want} for {len} lanes of {bits} bits",
            bytes.len()
        )));
    }
    if !total.is_multiple_of(8) && bytes[want - 1] >> (total % 8) != 0 {
        return Err(SecAggError::Rejected(
            "masked input has non-zero padding bits".into(),
        ));
    }
    Ok(())
}

/// Calls `f(i, lane_i)` for each lane: one unaligned 8-byte load per lane.
fn for_each_lane(bytes: &[u8], len: usize, bits: u32, mut f: impl FnMut(usize, u32)) {
    let mask = u64::from(lane_mask(bits));
    let fast = bytes.len().saturating_sub(7); // loads of 8 bytes stay in bounds below this
    for i in 0..len {
        let o = i * bits as usize;
        let (idx, sh) = (o >> 3, (o & 7) as u32);
        let word = if idx < fast {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[idx..idx + 8]);
            u64::from_le_bytes(w)
        } else {
            let mut w = [0u8; 8];
            let tail = &bytes[idx..];
            w[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(w)
        };
        f(i, ((word >> sh) & mask) as u32);
    }
}

/// Unpacks `len` lanes of `bits` bits; the byte length must be exact and
/// unused trailing bits zero, so every vector has one encoding.
pub fn unpack(bytes: &[u8], len: usize, bits: u32) -> Result<Vec<u32>, SecAggError> {
    check(bytes, len, bits)?;
    let mut out = vec![0u32; len];
    for_each_lane(bytes, len, bits, |i, v| out[i] = v);
    Ok(out)
}

/// Adds a packed vector into `sum` lane by lane (mod 2³²), without
/// materialising it.
pub fn add_packed(sum: &mut [u32], bytes: &[u8], bits: u32) -> Result<(), SecAggError> {
    check(bytes, sum.len(), bits)?;
    let len = sum.len();
    for_each_lane(bytes, len, bits, |i, v| sum[i] = sum[i].wrapping_add(v));
    Ok(())
}

pub use tg_compress::modular::lane_mask;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(values in proptest::collection::vec(any::<u32>(), 0..300), bits in 1u32..=32) {
            let packed = pack(&values, bits);
            prop_assert_eq!(packed.len(), (values.len() * bits as usize).div_ceil(8));
            let back = unpack(&packed, values.len(), bits).unwrap();
            let mask = lane_mask(bits);
            prop_assert_eq!(back, values.iter().map(|v| v & mask).collect::<Vec<_>>());
        }
    }

    #[test]
    fn add_packed_adds_lanes() {
        let mut sum = vec![1u32, 2, u32::MAX];
        add_packed(&mut sum, &pack(&[5, 6, 7], 9), 9).unwrap();
        assert_eq!(sum, vec![6, 8, 6]);
        assert!(add_packed(&mut sum, &[0u8; 2], 9).is_err());
    }

    #[test]
    fn wrong_lengths_and_padding_are_refused() {
        let p = pack(&[1, 2, 3], 5); // 15 bits → 2 bytes, 1 padding bit
        assert!(unpack(&p, 3, 5).is_ok());
        assert!(unpack(&p[..1], 3, 5).is_err());
        let mut bad = p.clone();
        bad[1] |= 0x80;
        assert!(unpack(&bad, 3, 5).is_err());
    }
}
