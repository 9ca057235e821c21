//! Any request body as job defaults or a key-provider configuration (the
//! REST API's JSON decoders): an error or a value that survives being
//! stored and read back, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tg_coordinator::api::{JobDefaults, KeyProvider};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = JobDefaults::from_json(data) {
        let stored = serde_json::to_vec(&d).expect("serializable");
        assert_eq!(JobDefaults::from_json(&stored).as_ref(), Ok(&d));
    }
    if let Ok(p) = KeyProvider::from_json(data) {
        let stored = serde_json::to_vec(&p).expect("serializable");
        assert_eq!(KeyProvider::from_json(&stored).as_ref(), Ok(&p));
    }
});
