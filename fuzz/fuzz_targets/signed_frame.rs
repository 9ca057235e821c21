//! Any bytes from a peer as a signed frame: `open` must return a message or
//! an error, never panic; an accepted frame must be signed by the expected
//! key and carry a message whose binding matches its header.
#![no_main]

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use tg_proto::signed::{self, Bound};
use tg_proto::{ToAgent, ToCoordinator};

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes();
    if let Ok((header, msg)) = signed::open::<ToCoordinator>(data, &key) {
        assert_eq!(header.sender, key);
        assert_eq!(msg.binding(), header.binding);
    }
    if let Ok((header, msg)) = signed::open::<ToAgent>(data, &key) {
        assert_eq!(header.sender, key);
        assert_eq!(msg.binding(), header.binding);
    }
});
