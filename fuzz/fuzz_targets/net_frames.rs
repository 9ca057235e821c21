//! Any bytes on the frame protocol: the codec's bounded read and decode, then
//! chunk reassembly, must never panic or buffer more than the limit.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tg_net::{PeerId, Reassembly, Wire, decode_request};

fuzz_target!(|data: &[u8]| {
    let limit = 8 << 20;
    let mut reassembly = Reassembly::new(limit, Duration::from_secs(60));
    let peer = PeerId::from_bytes(&[0, 2, 8, 1]).unwrap_or_else(|_| PeerId::random());
    // The input is a sequence of length-prefixed requests, as on the wire.
    let mut rest = data;
    while rest.len() >= 4 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let take = (4 + len).min(rest.len());
        if let Ok(Wire::Chunk { transfer, total, index, data }) = decode_request(&rest[..take]) {
            if let Ok(Some(frame)) = reassembly.accept(peer, transfer, total, index, data) {
                assert!(frame.len() as u64 <= limit);
                assert_eq!(frame.len() as u64, total);
            }
        }
        rest = &rest[take..];
    }
});
