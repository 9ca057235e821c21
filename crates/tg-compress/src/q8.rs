//! 8-bit block quantisation.

use tg_types::Parameters;

use crate::{Body, Compressed};

/// Codes `round(v / s)` with `s = absmax / 127` per block of `block` values.
pub(crate) fn encode(update: &Parameters, block: u32) -> Compressed {
    let values: Vec<f32> = update.values().collect();
    let mut scales = Vec::with_capacity(values.len().div_ceil(block as usize));
    let mut codes = Vec::with_capacity(values.len());
    for chunk in values.chunks(block as usize) {
        let max = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 && max.is_finite() {
            max / 127.0
        } else {
            0.0
        };
        scales.push(scale);
        for v in chunk {
            let q = if scale > 0.0 {
                (v / scale).round().clamp(-127.0, 127.0) as i8
            } else {
                0
            };
            codes.push(q as u8);
        }
    }
    Compressed {
        len: values.len() as u64,
        body: Body::Q8 {
            block,
            scales,
            codes,
        },
    }
}
