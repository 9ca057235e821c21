//! Secure-aggregation traffic from untrusted agents: any bytes, decoded as a
//! coordinator-bound frame, then fed to a live SecAgg+ server at whatever
//! stage the input drives it to. Nothing may panic; a rejected message must
//! leave the server usable.
#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::SigningKey;
use libfuzzer_sys::fuzz_target;
use tg_proto::{ToCoordinator, decode};
use tg_secagg::crypto::Context;
use tg_secagg::{RoundConfig, Server};

fn config() -> &'static std::sync::Arc<RoundConfig> {
    static CFG: OnceLock<std::sync::Arc<RoundConfig>> = OnceLock::new();
    CFG.get_or_init(|| {
        let ids = (0..5u8)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]).verifying_key())
            .collect();
        RoundConfig::new(Context { job: [0; 16], round: 1 }, ids, 8, 16, 0.0, 0.2)
            .expect("config")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut server = Server::new(config().clone());
    // The input may hold several frames, each prefixed by a 2-byte length.
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (frame, tail) = rest[2..].split_at(len);
        rest = tail;
        if let Ok(ToCoordinator::SecAgg(m)) = decode::<ToCoordinator>(frame) {
            let _ = server.receive(m.msg);
        }
        if frame.first() == Some(&0xff) {
            let _ = server.close_stage();
        }
    }
    let _ = server.finish(1);
});
