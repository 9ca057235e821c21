//! `tensorguard bench secagg`: one SecAgg+ round, all parties in process.

use std::time::Instant;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde_json::json;
use tg_secagg::crypto::Context;
use tg_secagg::local::run_round;
use tg_secagg::messages::Stage;
use tg_secagg::packing::lane_mask;
use tg_secagg::{Floors, RoundConfig};

use crate::cli::SecaggBenchArgs;
use crate::errors::{CliError, Code, invalid};
use crate::output::Output;

fn os_rng() -> Result<ChaCha20Rng, CliError> {
    let mut seed = [0u8; 32];
    crate::errors::os_random(&mut seed)?;
    Ok(ChaCha20Rng::from_seed(seed))
}

fn secagg_error(e: tg_secagg::SecAggError) -> CliError {
    invalid(
        "secure aggregation benchmark",
        e.to_string(),
        "check --clients (≥ 2), --bits (1–32), --dim (≥ 1) and --dropout (< 0.9)",
    )
}

pub fn run(a: &SecaggBenchArgs, out: &Output) -> Result<(), CliError> {
    if !(0.0..0.9).contains(&a.dropout) {
        return Err(invalid(
            format!("--dropout {}", a.dropout),
            "the dropout fraction must be in [0, 0.9)",
            "use e.g. --dropout 0.1",
        ));
    }
    let mut secret_rng = os_rng()?;
    let mut data_rng = ChaCha20Rng::seed_from_u64(a.seed);
    let keys: Vec<SigningKey> = (0..a.clients)
        .map(|_| {
            let mut b = [0u8; 32];
            secret_rng.fill_bytes(&mut b);
            SigningKey::from_bytes(&b)
        })
        .collect();
    let mut job = [0u8; 16];
    secret_rng.fill_bytes(&mut job);
    let cfg = RoundConfig::new(
        Context::new(job, 1),
        keys.iter().map(SigningKey::verifying_key).collect(),
        a.dim,
        a.bits,
        0.05,
        a.dropout,
    )
    .and_then(|c| c.with_threat(a.threat.into()))
    .map_err(secagg_error)?;
    if cfg.threat != tg_secagg::Threat::Malicious {
        out.note(&out.yellow(&format!("threat model: {}", cfg.threat.label())));
    }
    let floors = match cfg.threat {
        tg_secagg::Threat::Malicious => Floors::default(),
        _ => Floors::allowing_semi_honest(),
    };
    let mask = lane_mask(a.bits);
    let inputs: Vec<Vec<u32>> = (0..a.clients)
        .map(|_| (0..a.dim).map(|_| data_rng.next_u32() & mask).collect())
        .collect();
    // The first ⌊P·n⌋ of a seeded shuffle drop after sharing keys.
    let mut order: Vec<usize> = (0..a.clients).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (data_rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let n_drop = (a.dropout * a.clients as f64).floor() as usize;
    let mut drops = vec![None; a.clients];
    for &i in &order[..n_drop] {
        drops[i] = Some(Stage::MaskedInput);
    }
    let survivors: Vec<usize> = (0..a.clients).filter(|i| drops[*i].is_none()).collect();

    // The yardstick: the same survivors' inputs summed in the clear.
    let t = Instant::now();
    let mut plain = vec![0u32; a.dim];
    for &i in &survivors {
        plain
            .iter_mut()
            .zip(&inputs[i])
            .for_each(|(s, v)| *s = s.wrapping_add(*v));
    }
    plain.iter_mut().for_each(|v| *v &= mask);
    let plaintext_sum_ms = t.elapsed().as_secs_f64() * 1e3;

    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let (sum, report) = run_round(
        &cfg,
        &keys,
        inputs,
        &drops,
        &floors,
        &mut secret_rng,
        threads,
    )
    .map_err(secagg_error)?;
    let correct = sum.sum == plain
        && sum.survivors == survivors.iter().map(|&i| i as u32).collect::<Vec<_>>();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let v = json!({
        "threat": cfg.threat.label(),
        "clients": a.clients, "dim": a.dim, "dropout": a.dropout, "bits": a.bits,
        "degree": cfg.graph.degree, "threshold": cfg.graph.threshold, "threads": threads,
        "client_mask_ms": ms(report.client_mask), "client_total_ms": ms(report.client_total),
        "server_unmask_ms": ms(report.server_unmask), "server_total_ms": ms(report.server_total),
        "plaintext_sum_ms": plaintext_sum_ms,
        "upload_bytes_per_client": report.upload_bytes_per_client,
        "download_bytes_per_client": report.download_bytes_per_client,
        "correct": correct,
    });
    if out.json {
        out.json_value(&v);
    } else {
        out.line(&serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    if !correct {
        return Err(CliError::new(
            Code::Internal,
            "the unmasked sum differs from the plaintext sum",
            "this is a bug in secure aggregation",
            "report it with the command line",
        ));
    }
    Ok(())
}
