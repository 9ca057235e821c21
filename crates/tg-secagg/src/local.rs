//! An in-process driver: every party of a round in this process, with
//! dropouts injected by plan. Used by the property tests, the benchmark and
//! the in-process federation; the network layer drives the same state
//! machines over real connections.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rand_core::CryptoRng;

use crate::messages::{ServerBody, Signed, Stage};
use crate::{AggregateSum, Client, Floors, RoundConfig, SecAggError, Server};

/// What one round cost and carried.
#[derive(Clone, Debug, Default)]
pub struct RoundReport {
    /// Slowest client's masking step (stage 3: open shares, expand masks).
    pub client_mask: Duration,
    /// Slowest client's total compute over all stages.
    pub client_total: Duration,
    /// Server time in `finish` (reconstruction and mask removal).
    pub server_unmask: Duration,
    /// Server time over all stages (verification, routing, summing, unmasking).
    pub server_total: Duration,
    /// Largest upload of one client, in encoded bytes.
    pub upload_bytes_per_client: usize,
    /// Largest download of one client, in encoded bytes.
    pub download_bytes_per_client: usize,
    /// Every client message, for transcript checks.
    pub transcript: Vec<Signed>,
}

/// Runs one round. `drop_before[i] = Some(stage)` makes client i vanish
/// before sending its `stage` message; every client holds `floors`.
pub fn run_round(
    cfg: &std::sync::Arc<RoundConfig>,
    keys: &[SigningKey],
    inputs: Vec<Vec<u32>>,
    drop_before: &[Option<Stage>],
    floors: &Floors,
    rng: &mut impl CryptoRng,
    threads: usize,
) -> Result<(AggregateSum, RoundReport), SecAggError> {
    let n = cfg.n();
    if keys.len() != n || inputs.len() != n || drop_before.len() != n {
        return Err(SecAggError::Params(
            "one key, input and drop plan per participant".into(),
        ));
    }
    let mut report = RoundReport::default();
    let mut client_time = vec![Duration::ZERO; n];
    let mut up = vec![0usize; n];
    let mut down = vec![0usize; n];
    let alive = |i: usize, stage: Stage| drop_before[i].is_none_or(|s| s > stage);
    let size = |m: &Signed| postcard::to_allocvec(m).map_or(0, |v| v.len());
    let mut server = Server::new(cfg.clone());
    let mut server_time = Duration::ZERO;

    // Stage 1.
    let mut clients: Vec<Option<Client>> = Vec::with_capacity(n);
    let mut outbox = Vec::new();
    for (i, input) in inputs.into_iter().enumerate() {
        let t = Instant::now();
        let (c, msg) = Client::new(cfg.clone(), i as u32, keys[i].clone(), input, floors, rng)?;
        client_time[i] += t.elapsed();
        clients.push(Some(c));
        if alive(i, Stage::AdvertiseKeys) {
            outbox.push(msg);
        }
    }
    let mut stage = Stage::AdvertiseKeys;
    loop {
        let t = Instant::now();
        for m in outbox.drain(..) {
            up[m.from as usize] += size(&m);
            report.transcript.push(m.clone());
            server.receive(m)?;
        }
        if stage == Stage::Unmask {
            server_time += t.elapsed();
            break;
        }
        let routed = server.close_stage()?;
        server_time += t.elapsed();
        stage = server.stage();
        for (i, body) in routed {
            let i = i as usize;
            down[i] += postcard::to_allocvec(&body).map_or(0, |v| v.len());
            if !alive(i, stage) {
                continue;
            }
            let Some(client) = clients[i].as_mut() else {
                continue;
            };
            let t = Instant::now();
            let reply = match body {
                ServerBody::NeighbourKeys(k) => client.on_neighbour_keys(&k, rng),
                ServerBody::SharesForYou(s) => {
                    let r = client.on_shares(&s);
                    report.client_mask = report.client_mask.max(t.elapsed());
                    r
                }
                ServerBody::Survivors(s) => client.on_survivors(&s),
                ServerBody::SurvivorSignatures(s) => client.on_survivor_signatures(&s),
            };
            client_time[i] += t.elapsed();
            outbox.push(reply?);
        }
    }
    let t = Instant::now();
    let sum = server.finish(threads)?;
    report.server_unmask = t.elapsed();
    report.server_total = server_time + report.server_unmask;
    report.client_total = client_time.into_iter().max().unwrap_or_default();
    report.upload_bytes_per_client = up.into_iter().max().unwrap_or(0);
    report.download_bytes_per_client = down.into_iter().max().unwrap_or(0);
    Ok((sum, report))
}
