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

/// Unpacks `len` lanes of `bits` bits; the byte length must be exact and
/// unused trailing bits zero, so every vector has one encoding.
pub fn unpack(bytes: &[u8], len: usize, bits: u32) -> Result<Vec<u32>, SecAggError> {
    let want = (len * bits as usize).div_ceil(8);
    if bytes.len() != want {
        return Err(SecAggError::Rejected(format!(
            "masked input has {} bytes, expected {want} for {len} lanes of {bits} bits",
            bytes.len()
        )));
    }
    let mask = u64::from(lane_mask(bits));
    let mut out = Vec::with_capacity(len);
    let (mut acc, mut filled) = (0u64, 0u32);
    let mut it = bytes.iter();
    for _ in 0..len {
        while filled < bits {
            let b = it.next().copied().unwrap_or(0);
            acc |= u64::from(b) << filled;
            filled += 8;
        }
        out.push((acc & mask) as u32);
        acc >>= bits;
        filled -= bits;
    }
    if acc != 0 {
        return Err(SecAggError::Rejected(
            "masked input has non-zero padding bits".into(),
        ));
    }
    Ok(out)
}

/// 2^B − 1 for B in 1..=32.
pub fn lane_mask(bits: u32) -> u32 {
    if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    }
}

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
    fn wrong_lengths_and_padding_are_refused() {
        let p = pack(&[1, 2, 3], 5); // 15 bits → 2 bytes, 1 padding bit
        assert!(unpack(&p, 3, 5).is_ok());
        assert!(unpack(&p[..1], 3, 5).is_err());
        let mut bad = p.clone();
        bad[1] |= 0x80;
        assert!(unpack(&bad, 3, 5).is_err());
    }
}
