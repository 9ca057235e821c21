//! Any file as an audit log (and its head) or as a sealed key file: the
//! verifier reports findings and the parser errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tg_trust::audit::{VerifyOptions, head_path, verify_log};
use tg_trust::sealed::SealedFile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = SealedFile::parse(&text);
    let Ok(dir) = tempfile::tempdir() else { return };
    let log = dir.path().join("audit.jsonl");
    let (body, head) = data.split_at(data.len() * 3 / 4);
    if std::fs::write(&log, body).is_err() || std::fs::write(head_path(&log), head).is_err() {
        return;
    }
    if let Ok(report) = verify_log(&log, &VerifyOptions::default()) {
        // Without a valid signed head nothing random can verify.
        assert!(!report.ok || report.entries > 0);
    }
});
