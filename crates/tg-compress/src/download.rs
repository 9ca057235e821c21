//! Model downloads, packed with zstd.
//!
//! Design decision: what the coordinator sends agents (the global model,
//! SCAFFOLD's control variate) is packed once per message and unpacked by
//! each agent into exactly the size the packed frame declares, never more
//! than the caller's limit: a decompression bomb costs an agent no more
//! memory than an unpacked frame of the same limit would. A message is
//! packed only when that saves at least [`MIN_SAVING`] of it; small
//! messages are never packed.

use crate::EncodeError;

/// Messages shorter than this are sent as they are.
pub const MIN_PACKED: usize = 16 * 1024;
/// A packed message must be at least this fraction smaller to be sent packed.
pub const MIN_SAVING: f64 = 0.02;
/// zstd's level: fast, most of the gain on float weights.
const LEVEL: i32 = 3;

/// `bytes` packed, or None when packing would not pay.
pub fn pack(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < MIN_PACKED {
        return None;
    }
    let packed = zstd::bulk::compress(bytes, LEVEL).ok()?;
    (packed.len() as f64 <= bytes.len() as f64 * (1.0 - MIN_SAVING)).then_some(packed)
}

/// Unpacks `packed` (untrusted bytes) into at most `limit` bytes: the
/// packed frame must declare its size, the size must be within `limit`, and
/// the content must be exactly that long.
pub fn unpack(packed: &[u8], limit: usize) -> Result<Vec<u8>, EncodeError> {
    let bad = |why: String| EncodeError::Params(format!("packed message: {why}"));
    let declared = zstd::zstd_safe::get_frame_content_size(packed)
        .map_err(|_| bad("not a zstd frame".into()))?
        .ok_or_else(|| bad("its size is not declared".into()))?;
    let size = usize::try_from(declared)
        .ok()
        .filter(|&n| n <= limit)
        .ok_or_else(|| {
            bad(format!(
                "declares {declared} bytes, more than the {limit} allowed"
            ))
        })?;
    let out = zstd::bulk::decompress(packed, size).map_err(|e| bad(e.to_string()))?;
    if out.len() != size {
        return Err(bad(format!(
            "holds {} bytes, not the {size} it declares",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(n: usize) -> Vec<u8> {
        // Trained-looking f32s: small values, many sharing exponents.
        (0..n)
            .flat_map(|i| (((i * 7919) % 1000) as f32 * 1e-4 - 0.05).to_le_bytes())
            .collect()
    }

    #[test]
    fn round_trips_and_skips_what_does_not_pay() {
        let w = weights(100_000);
        let p = pack(&w).unwrap();
        assert!(p.len() < w.len());
        assert_eq!(unpack(&p, w.len()).unwrap(), w);
        assert!(pack(&w[..1000]).is_none(), "small messages go as they are");
        let mut noise = vec![0u8; 200_000];
        rand_core::RngCore::fill_bytes(
            &mut <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(7),
            &mut noise,
        );
        assert!(
            pack(&noise).is_none(),
            "incompressible bytes go as they are"
        );
    }

    #[test]
    fn bombs_lies_and_garbage_are_refused() {
        // 64 MiB of zeros packs into a few KiB: refused above the limit…
        let zeros = vec![0u8; 64 << 20];
        let bomb = pack(&zeros).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let e = unpack(&bomb, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
        // …taken within it.
        assert_eq!(unpack(&bomb, 64 << 20).unwrap().len(), 64 << 20);
        // Truncated, garbage, and a frame without a declared size.
        let w = weights(50_000);
        let p = pack(&w).unwrap();
        assert!(unpack(&p[..p.len() / 2], w.len()).is_err());
        assert!(unpack(b"not zstd at all", 1 << 20).is_err());
        let mut streamed = Vec::new();
        {
            let mut enc = zstd::stream::write::Encoder::new(&mut streamed, 3).unwrap();
            std::io::Write::write_all(&mut enc, &w).unwrap();
            enc.finish().unwrap();
        }
        let e = unpack(&streamed, 1 << 30).unwrap_err().to_string();
        assert!(e.contains("not declared"), "{e}");
        // A small first frame with a large one behind it: the output is
        // bounded by what the first declares, and the rest is refused.
        let head = zstd::bulk::compress(&w[..100], 3).unwrap();
        let two = [head, p.clone()].concat();
        assert!(unpack(&two, 1 << 30).is_err());
    }
}
