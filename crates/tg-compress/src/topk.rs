//! Top-k sparsification with error feedback.

use tg_types::Parameters;

use crate::{Body, Compressed};

/// Appends `v` as LEB128.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads one canonical LEB128 value from `bytes[*at..]`.
pub(crate) fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        let part = u64::from(byte & 0x7f);
        if shift == 63 && part > 1 {
            return None;
        }
        v |= part << shift;
        if byte & 0x80 == 0 {
            // Canonical: no trailing zero groups.
            if byte == 0 && shift > 0 {
                return None;
            }
            return Some(v);
        }
    }
    None
}

/// The `⌈fraction · d⌉` largest coordinates of `update + residual`; the rest
/// becomes the new residual.
pub(crate) fn encode(update: &Parameters, fraction: f64, residual: &mut Vec<f32>) -> Compressed {
    let d = update.num_values();
    if residual.len() != d {
        *residual = vec![0.0; d];
    }
    for (r, v) in residual.iter_mut().zip(update.values()) {
        *r += v;
    }
    let k = ((fraction * d as f64).ceil() as usize).clamp(1.min(d), d);
    let mut order: Vec<u32> = (0..d as u32).collect();
    let by_size = |a: &u32, b: &u32| {
        residual[*b as usize]
            .abs()
            .total_cmp(&residual[*a as usize].abs())
            .then(a.cmp(b))
    };
    if k > 0 && k < d {
        order.select_nth_unstable_by(k - 1, by_size);
    }
    order.truncate(k);
    order.sort_unstable();
    let mut gaps = Vec::with_capacity(k * 2);
    let mut values = Vec::with_capacity(k);
    let mut prev = 0u64;
    for (n, &i) in order.iter().enumerate() {
        let i = u64::from(i);
        put_varint(&mut gaps, if n == 0 { i } else { i - prev });
        prev = i;
        let slot = &mut residual[i as usize];
        values.push(*slot);
        *slot = 0.0;
    }
    Compressed {
        len: d as u64,
        body: Body::TopK { gaps, values },
    }
}
