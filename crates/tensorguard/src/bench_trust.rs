//! `tensorguard bench trust`: flags in, the measurements (tg-bench) out as JSON.

use std::path::Path;

use crate::errors::{Code, UserError, invalid};
use crate::output::Output;

pub fn run(vectors: &Path, repeat: usize, out: &Output) -> Result<(), UserError> {
    let v = tg_bench::trust::run(vectors, repeat).map_err(|e| match e {
        tg_bench::BenchError::Args(why) => UserError::new(
            Code::EvidenceUnreadable,
            "the attestation vectors are unreadable",
            why,
            "pass --vectors pointing at the attestation vectors (../shared/attestation-vectors)",
        ),
        other => invalid(
            "the trust benchmark failed",
            other.to_string(),
            "check --vectors; if it persists, report it with the command line",
        ),
    })?;
    out.json_value(&v);
    Ok(())
}
