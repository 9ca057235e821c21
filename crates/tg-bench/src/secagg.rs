//! `bench secagg`: one SecAgg+ round with every party in this process, timed
//! per party, and its unmasked sum checked against the plaintext sum.

use std::time::Instant;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use serde::Serialize;
use tg_secagg::crypto::Context;
use tg_secagg::local::run_round;
use tg_secagg::messages::Stage;
use tg_secagg::packing::lane_mask;
use tg_secagg::{Floors, RoundConfig, Threat};

use crate::{BenchError, Result};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct SecaggArgs {
    /// Clients in the round.
    pub clients: usize,
    /// Lanes per input.
    pub dim: usize,
    /// Fraction of clients dropping after sharing their keys.
    pub dropout: f64,
    /// Bits per lane.
    pub bits: u32,
    /// Server threads (None: all cores).
    pub threads: Option<usize>,
    /// Seed of the inputs and of who drops (keys come from the OS).
    pub seed: u64,
    /// The server the thresholds are chosen against.
    pub threat: Threat,
}

/// What one round measured.
#[derive(Clone, Debug, Serialize)]
pub struct SecaggReport {
    /// The threat model, as it prints (the semi-honest one says it is weaker).
    pub threat: &'static str,
    /// Clients.
    pub clients: usize,
    /// Lanes.
    pub dim: usize,
    /// Dropout fraction.
    pub dropout: f64,
    /// Bits per lane.
    pub bits: u32,
    /// Neighbours per client.
    pub degree: usize,
    /// Shares needed.
    pub threshold: usize,
    /// Server threads.
    pub threads: usize,
    /// Slowest client's masking.
    pub client_mask_ms: f64,
    /// Slowest client's whole protocol.
    pub client_total_ms: f64,
    /// Server unmasking.
    pub server_unmask_ms: f64,
    /// Server, every stage.
    pub server_total_ms: f64,
    /// The same survivors' inputs summed in the clear.
    pub plaintext_sum_ms: f64,
    /// Bytes each client uploads.
    pub upload_bytes_per_client: u64,
    /// Bytes each client downloads.
    pub download_bytes_per_client: u64,
    /// The unmasked sum equals the plaintext sum.
    pub correct: bool,
}

fn os_rng() -> Result<ChaCha20Rng> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| BenchError::Args(format!("the OS random number generator failed: {e}")))?;
    Ok(ChaCha20Rng::from_seed(seed))
}

fn secagg_error(e: tg_secagg::SecAggError) -> BenchError {
    BenchError::Args(format!(
        "{e} (check --clients ≥ 3, --bits 1–32, --dim ≥ 1 and --dropout < 0.9)"
    ))
}

/// Runs one round.
pub fn run(a: SecaggArgs) -> Result<SecaggReport> {
    if !(0.0..0.9).contains(&a.dropout) {
        return Err(BenchError::Args(format!(
            "--dropout {}: the dropout fraction must be in [0, 0.9)",
            a.dropout
        )));
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
    .and_then(|c| c.with_threat(a.threat))
    .map_err(secagg_error)?;
    let floors = match cfg.threat {
        Threat::Malicious => Floors::default(),
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
    Ok(SecaggReport {
        threat: cfg.threat.label(),
        clients: a.clients,
        dim: a.dim,
        dropout: a.dropout,
        bits: a.bits,
        degree: cfg.graph.degree,
        threshold: cfg.graph.threshold,
        threads,
        client_mask_ms: ms(report.client_mask),
        client_total_ms: ms(report.client_total),
        server_unmask_ms: ms(report.server_unmask),
        server_total_ms: ms(report.server_total),
        plaintext_sum_ms,
        upload_bytes_per_client: report.upload_bytes_per_client as u64,
        download_bytes_per_client: report.download_bytes_per_client as u64,
        correct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_round_sums_exactly_in_both_threat_models() {
        for threat in [Threat::Malicious, Threat::SemiHonest] {
            let r = run(SecaggArgs {
                clients: 12,
                dim: 64,
                dropout: 0.1,
                bits: 16,
                threads: Some(1),
                seed: 3,
                threat,
            })
            .unwrap();
            assert!(r.correct, "{r:?}");
        }
        assert!(matches!(
            run(SecaggArgs {
                clients: 12,
                dim: 64,
                dropout: 0.95,
                bits: 16,
                threads: Some(1),
                seed: 3,
                threat: Threat::Malicious,
            }),
            Err(BenchError::Args(_))
        ));
    }
}
