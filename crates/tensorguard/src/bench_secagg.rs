//! `tensorguard bench secagg`: flags in, the report (tg-bench) out.

use crate::cli::SecaggBenchArgs;
use crate::errors::{Code, UserError, invalid};
use crate::output::Output;

pub fn run(a: &SecaggBenchArgs, out: &Output) -> Result<(), UserError> {
    let threat: tg_secagg::Threat = a.threat.into();
    if threat != tg_secagg::Threat::Malicious {
        out.note(&out.yellow(&format!("threat model: {}", threat.label())));
    }
    let report = tg_bench::secagg::run(tg_bench::secagg::SecaggArgs {
        clients: a.clients,
        dim: a.dim,
        dropout: a.dropout,
        bits: a.bits,
        threads: a.threads,
        seed: a.seed,
        threat,
    })
    .map_err(|e| {
        invalid(
            "secure aggregation benchmark",
            e.to_string(),
            "use e.g. --clients 100 --dim 1000000 --dropout 0.1",
        )
    })?;
    let v = serde_json::to_value(&report).unwrap_or_default();
    if out.json {
        out.json_value(&v);
    } else {
        out.line(&serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    if !report.correct {
        return Err(UserError::new(
            Code::Internal,
            "the unmasked sum differs from the plaintext sum",
            "this is a bug in secure aggregation",
            "report it with the command line",
        ));
    }
    Ok(())
}
