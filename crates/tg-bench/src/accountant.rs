//! `bench accountant`: the privacy accountants on the reference workloads
//! (the same ones Opacus and dp-accounting are run on in BENCHMARKS.md).

use serde_json::{Value, json};
use tg_privacy::{Delta, NoiseMultiplier, RdpAccountant, SamplingRate};

use crate::{BenchError, Result, median_ms};

fn p(q: f64, s: f64) -> Result<(SamplingRate, NoiseMultiplier)> {
    let bad = |e: tg_privacy::PrivacyError| BenchError::Wrong(e.to_string());
    Ok((
        SamplingRate::new(q).map_err(bad)?,
        NoiseMultiplier::new(s).map_err(bad)?,
    ))
}

/// Median times of `repeat` runs of each workload, and the ε each gives.
pub fn run(repeat: usize) -> Result<Value> {
    let delta = Delta::new(1e-5).map_err(|e| BenchError::Wrong(e.to_string()))?;
    let (q1, s1) = p(0.01, 1.0)?;
    let (rdp_ms, (rdp_eps, _)) = median_ms(repeat, || {
        let mut acc = RdpAccountant::default();
        acc.compose(q1, s1, 10_000);
        acc.epsilon(delta)
    });
    let (q2, s2) = p(256.0 / 60_000.0, 1.1)?;
    let (pld_ms, pld_eps) = median_ms(repeat, || {
        tg_privacy::pld::epsilon(
            &[(q2, s2, 14_062)],
            delta,
            tg_privacy::pld::DEFAULT_INTERVAL,
        )
    });
    Ok(json!({
        "repeat": repeat,
        "rdp": {"workload": "q=0.01, sigma=1.0, steps=10000, delta=1e-5, 160 orders", "median_ms": rdp_ms, "epsilon": rdp_eps},
        "pld": {"workload": "q=256/60000, sigma=1.1, steps=14062, delta=1e-5", "median_ms": pld_ms, "epsilon": pld_eps},
        "cpu_cores": std::thread::available_parallelism().map_or(1, usize::from),
    }))
}
