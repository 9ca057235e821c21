//! Any bytes as a compute-network message, a wallet export or a task input:
//! an error or a value that survives a round trip, and validation and
//! verification that refuse rather than panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tg_compute::{Msg, WalletExport};

fuzz_target!(|data: &[u8]| {
    let mut framed = b"TGC1".to_vec();
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        if let Ok(m) = Msg::decode(bytes) {
            // Compared as bytes: a decoded result may hold NaN, which is not equal to itself.
            let e = m.encode();
            assert_eq!(Msg::decode(&e).map(|x| x.encode()).ok(), Some(e));
            match &m {
                Msg::Assign { input, .. } => {
                    if let Ok(k) = tg_tasks::kind_by_name(&input.kind) {
                        let _ = k.validate(input);
                        let _ = k.plan(input);
                    }
                }
                Msg::Result(r) => {
                    let _ = r.verify(&tg_tasks::TaskInput { kind: "embed".into(), texts: vec!["x".into()] }, &r.worker);
                }
                Msg::Receipt(r) => {
                    let _ = r.verify();
                }
                _ => {}
            }
        }
    }
    if let Ok(w) = serde_json::from_slice::<WalletExport>(data) {
        let _ = w.verify();
    }
});
