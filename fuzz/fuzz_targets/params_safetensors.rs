//! Model files are untrusted (uploaded, downloaded, read from disk): decoding
//! must never panic, and whatever decodes must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tg_types::Parameters;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Parameters::from_safetensors(data) {
        let again = Parameters::from_safetensors(&p.to_safetensors().expect("encode")).expect("decode");
        assert_eq!(again, p);
    }
});
