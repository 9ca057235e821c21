//! Any bytes from the network: decoding either direction's frame must return
//! a value or an error, never panic, hang or allocate without bound; a decoded
//! frame must re-encode to the same bytes (canonical encoding). The in-place
//! reader of training replies (`decode_trained`) must agree with the full
//! decoder on every frame it accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tg_proto::{ToAgent, ToCoordinator, decode, decode_trained, encode};
use tg_types::view::Lanes;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode::<ToAgent>(data) {
        assert_eq!(encode(&msg).expect("re-encode"), data);
    }
    let full = decode::<ToCoordinator>(data);
    if let Ok(msg) = &full {
        assert_eq!(encode(msg).expect("re-encode"), data);
    }
    if let Ok(Some(view)) = decode_trained(data) {
        let Ok(ToCoordinator::Trained(r)) = full else {
            panic!("decode_trained accepted a frame the full decoder does not read as Trained");
        };
        assert!(view.update.lanes().map(f32::to_bits).eq(r.update.values().map(f32::to_bits)));
        assert_eq!((view.agent, view.num_examples, view.steps), (r.agent, r.num_examples, r.steps));
        assert_eq!(view.control_delta.is_some(), r.control_delta.is_some());
    }
});
