//! Any bytes from a peer as a signed frame: `open` must return a message or
//! an error, never panic; an accepted frame must be signed by the expected
//! key and carry a message whose binding matches its header (also through
//! `open_from_agent`, which leaves a training reply in the frame, and
//! through a packed payload, which `open` unpacks within the frame limit).
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
    // The coordinator's path: a training reply stays in the frame, and
    // whatever is accepted matches the signed header.
    if let Ok((header, opened)) = signed::open_from_agent(data, &key) {
        assert_eq!(header.sender, key);
        match opened {
            signed::FromAgent::Trained(range) => {
                let at = tg_proto::trained_at(&data[range]).expect("a training reply");
                assert_eq!(tg_proto::Binding::trained(at), header.binding);
            }
            signed::FromAgent::Message(msg) => assert_eq!(msg.binding(), header.binding),
        }
    }
    if let Ok((header, msg)) = signed::open::<ToAgent>(data, &key) {
        assert_eq!(header.sender, key);
        assert_eq!(msg.binding(), header.binding);
    }
});
