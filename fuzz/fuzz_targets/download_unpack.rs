//! Any bytes as a packed model download: `unpack` must return at most the
//! limit it was given, exactly the size the frame declared, or an error —
//! never panic, never allocate beyond the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = tg_compress::download::unpack(data, LIMIT) {
        assert!(out.len() <= LIMIT);
    }
});
