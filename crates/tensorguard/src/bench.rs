//! `tensorguard bench …`: measurements printed as JSON (docs/BENCHMARKS.md).

use std::time::Instant;

use serde_json::json;
use tg_privacy::{Delta, NoiseMultiplier, RdpAccountant, SamplingRate};

use crate::cli::BenchCommand;
use crate::errors::{CliError, from_privacy};
use crate::output::Output;

/// Median wall time in milliseconds of `repeat` runs, and the last result.
pub fn time<T>(repeat: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut samples = Vec::with_capacity(repeat.max(1));
    let mut last = f();
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        last = f();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], last)
}

pub fn run(cmd: BenchCommand, out: &Output) -> Result<(), CliError> {
    match cmd {
        BenchCommand::Fleet(a) => crate::fleet::bench::run(&a, out),
        BenchCommand::Api { rounds, requests } => crate::bench_api::run(rounds, requests, out),
        BenchCommand::Trust { vectors, repeat } => crate::bench_trust::run(&vectors, repeat, out),
        BenchCommand::Accountant { repeat } => {
            let p = |q: f64, s: f64| -> Result<_, CliError> {
                Ok((
                    SamplingRate::new(q).map_err(from_privacy)?,
                    NoiseMultiplier::new(s).map_err(from_privacy)?,
                ))
            };
            let delta = Delta::new(1e-5).map_err(from_privacy)?;
            let (q1, s1) = p(0.01, 1.0)?;
            let (rdp_ms, (rdp_eps, _)) = time(repeat, || {
                let mut acc = RdpAccountant::default();
                acc.compose(q1, s1, 10_000);
                acc.epsilon(delta)
            });
            let (q2, s2) = p(256.0 / 60_000.0, 1.1)?;
            let (pld_ms, pld_eps) = time(repeat, || {
                tg_privacy::pld::epsilon(
                    &[(q2, s2, 14_062)],
                    delta,
                    tg_privacy::pld::DEFAULT_INTERVAL,
                )
            });
            out.json_value(&json!({
                "repeat": repeat,
                "rdp": {"workload": "q=0.01, sigma=1.0, steps=10000, delta=1e-5, 160 orders", "median_ms": rdp_ms, "epsilon": rdp_eps},
                "pld": {"workload": "q=256/60000, sigma=1.1, steps=14062, delta=1e-5", "median_ms": pld_ms, "epsilon": pld_eps},
                "cpu_cores": std::thread::available_parallelism().map_or(1, usize::from),
            }));
            Ok(())
        }
        BenchCommand::Secagg(a) => crate::bench_secagg::run(&a, out),
        BenchCommand::Aggregate(a) => crate::bench_aggregate::run(&a, out),
        BenchCommand::AggregateFeed(a) => crate::bench_aggregate::feed(&a),
    }
}
