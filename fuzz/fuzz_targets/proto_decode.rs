//! Any bytes from the network: decoding either direction's frame must return
//! a value or an error, never panic, hang or allocate without bound; a decoded
//! frame must re-encode to the same bytes (canonical encoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tg_proto::{ToAgent, ToCoordinator, decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode::<ToAgent>(data) {
        assert_eq!(encode(&msg).expect("re-encode"), data);
    }
    if let Ok(msg) = decode::<ToCoordinator>(data) {
        assert_eq!(encode(&msg).expect("re-encode"), data);
    }
});
