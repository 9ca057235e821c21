//! `bench aggregate`: coordinator memory while a round's updates stream in.
//!
//! The agents' side ([`feed`]) writes each update as the signed frame an
//! agent sends (`ToCoordinator::Trained`, sealed with the agent's Ed25519
//! key, length-prefixed) to a byte stream — in `tensorguard bench aggregate`
//! a pipe from a child process, so the agents' memory is not the
//! coordinator's. The coordinator's side ([`aggregate`]) reads one frame at
//! a time and does what the network coordinator does with it: verifies the
//! signature and binding (`tg_proto::signed::open_from_agent`) and folds
//! the payload in place into the strategy's [`Fold`] (streaming), or, for
//! comparison, decodes and keeps every update and aggregates at the end
//! (the batch path this replaced).

use std::io::{Read, Write};
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tg_proto::{RoundRef, ToCoordinator, TrainReply};
use tg_strategy::{ClientUpdate, FedAvg, Fold, Sampler, Strategy};
use tg_types::{AgentId, JobId, NamedTensor, Parameters};

use crate::{BenchError, Result, memory};

/// How the coordinator holds the round's updates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Each update folded in on arrival and dropped.
    Streaming,
    /// Every update kept until the round's last, then aggregated.
    Batch,
}

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct AggregateArgs {
    /// Agents whose updates arrive.
    pub clients: usize,
    /// Model size (f32 values).
    pub dim: usize,
    /// Streaming or batch.
    pub mode: Mode,
    /// Seed of the synthetic updates.
    pub seed: u64,
}

impl AggregateArgs {
    /// Refuses arguments that describe nothing to aggregate.
    pub fn check(&self) -> Result<()> {
        if self.clients == 0 || self.dim == 0 {
            return Err(BenchError::Args(
                "--clients and --dim must be at least 1".into(),
            ));
        }
        if self.dim.saturating_mul(4) > tg_proto::MAX_FRAME_BYTES - 4096 {
            return Err(BenchError::Args(format!(
                "--dim {} does not fit one frame ({} bytes at most)",
                self.dim,
                tg_proto::MAX_FRAME_BYTES
            )));
        }
        Ok(())
    }
}

/// What one run measured.
#[derive(Clone, Debug, Serialize)]
pub struct AggregateReport {
    /// Streaming or batch.
    pub mode: Mode,
    /// Agents aggregated.
    pub clients: usize,
    /// Model size (f32 values).
    pub dim: usize,
    /// The model's f32 size in bytes (4 · dim).
    pub model_bytes: u64,
    /// Resident bytes once the global model is built, before any update.
    pub idle_rss_bytes: u64,
    /// The process's peak resident bytes over the whole run (as it ends).
    pub peak_rss_bytes: u64,
    /// `peak − idle`.
    pub above_idle_bytes: u64,
    /// `above_idle / model_bytes`.
    pub above_idle_per_model: f64,
    /// Bytes of update frames read.
    pub wire_bytes: u64,
    /// Wall time from the first frame read to the next model.
    pub seconds: f64,
    /// SHA-256 of the next global model (safetensors), equal across modes.
    pub model_sha256: String,
}

fn tensor_name() -> String {
    "layer.weight".into()
}

/// SplitMix64: a deterministic stream for synthetic updates.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Client `i`'s update and example count.
fn synthetic(seed: u64, i: usize, dim: usize) -> Result<(Parameters, u64)> {
    let base = mix(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let data = (0..dim as u64)
        .map(|j| {
            let r = mix(base ^ j) >> 40; // 24 bits
            (r as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
        })
        .collect();
    let update = Parameters::new(vec![NamedTensor {
        name: tensor_name(),
        shape: vec![dim],
        data,
    }])?;
    Ok((update, 1 + mix(base) % 1000))
}

fn round_ref() -> RoundRef {
    RoundRef {
        job: JobId::from_bytes([7; 16]),
        round: 1,
    }
}

/// Agent `i`'s identity key (deterministic, so both sides of the pipe
/// derive it; the coordinator learns real agents' keys at admission).
fn agent_key(seed: u64, i: usize) -> ed25519_dalek::SigningKey {
    let d = Sha256::new()
        .chain_update(b"tensorguard bench agent key\0")
        .chain_update(seed.to_le_bytes())
        .chain_update((i as u64).to_le_bytes())
        .finalize();
    let mut b = [0u8; 32];
    b.copy_from_slice(&d);
    ed25519_dalek::SigningKey::from_bytes(&b)
}

fn not_trained() -> BenchError {
    BenchError::Args("the stream carried a frame that is not a training reply".into())
}

/// The agents' side: writes `clients` update frames, each prefixed by its
/// length (u64, little-endian).
pub fn feed(clients: usize, dim: usize, seed: u64, out: &mut impl Write) -> Result<()> {
    for i in 0..clients {
        let (update, num_examples) = synthetic(seed, i, dim)?;
        let message = ToCoordinator::Trained(TrainReply {
            at: round_ref(),
            agent: AgentId::numbered(i),
            update,
            num_examples,
            train_loss: Some(0.5),
            steps: 1,
            control_delta: None,
            epsilon: None,
            compressed: None,
        });
        let frame = tg_proto::signed::seal(&agent_key(seed, i), 1, &message)?;
        out.write_all(&(frame.len() as u64).to_le_bytes())?;
        out.write_all(&frame)?;
    }
    out.flush()?;
    Ok(())
}

/// The coordinator's side: reads `args.clients` frames from `input` and
/// aggregates them with FedAvg.
pub fn aggregate(args: AggregateArgs, input: &mut impl Read) -> Result<AggregateReport> {
    args.check()?;
    // A global model that is resident (as one loaded from the store is),
    // not zero pages the kernel has not handed out yet.
    let global = Parameters::new(vec![NamedTensor {
        name: tensor_name(),
        shape: vec![args.dim],
        data: (0..args.dim).map(|j| (j % 97) as f32 * 1e-3).collect(),
    }])?;
    let mut strategy = FedAvg::new(Sampler::new(1.0, 1)?, 1.0);
    let idle = memory::rss().map_or(0, |r| r.now);
    let started = Instant::now();
    let mut wire = 0u64;
    let mut fold = Fold::new(strategy.fold_rule(), &global, args.clients);
    let mut kept: Vec<ClientUpdate> = Vec::new();
    for i in 0..args.clients {
        let key = agent_key(args.seed, i).verifying_key().to_bytes();
        let mut len = [0u8; 8];
        input.read_exact(&mut len)?;
        let len = u64::from_le_bytes(len);
        if len > tg_proto::MAX_FRAME_BYTES as u64 {
            return Err(BenchError::Args(format!(
                "a frame claims {len} bytes, over the {} limit",
                tg_proto::MAX_FRAME_BYTES
            )));
        }
        let mut frame = vec![0u8; len as usize];
        input.read_exact(&mut frame)?;
        wire += len + 8;
        match args.mode {
            // The coordinator's path: verify, then fold straight from the
            // frame's bytes.
            Mode::Streaming => {
                let range = match tg_proto::signed::open_from_agent(&frame, &key)?.1 {
                    tg_proto::signed::FromAgent::Trained(range) => range,
                    tg_proto::signed::FromAgent::Message(_) => return Err(not_trained()),
                };
                let r = tg_proto::decode_trained(&frame[range])?.ok_or_else(not_trained)?;
                fold.add_parts(
                    &r.agent,
                    r.num_examples,
                    &r.update,
                    r.control_delta.as_ref(),
                )?;
            }
            // The path this replaced: decode, keep, aggregate at the end.
            Mode::Batch => match tg_proto::signed::open::<ToCoordinator>(&frame, &key)?.1 {
                ToCoordinator::Trained(r) => kept.push(ClientUpdate {
                    agent: r.agent,
                    update: r.update,
                    num_examples: r.num_examples,
                    control_delta: r.control_delta,
                }),
                _ => return Err(not_trained()),
            },
        }
    }
    let next = match args.mode {
        Mode::Streaming => strategy.apply(1, &global, fold)?,
        Mode::Batch => {
            drop(fold);
            let next = strategy.aggregate_train(1, &global, &kept)?;
            drop(kept);
            next
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let model_sha256 = hex::encode(Sha256::digest(next.to_safetensors()?));
    drop(next);
    // The high-water mark as the run ends, so it is what `/usr/bin/time -v` sees.
    let peak = memory::rss().map_or(0, |r| r.peak);
    let model_bytes = 4 * args.dim as u64;
    let above = peak.saturating_sub(idle);
    Ok(AggregateReport {
        mode: args.mode,
        clients: args.clients,
        dim: args.dim,
        model_bytes,
        idle_rss_bytes: idle,
        peak_rss_bytes: peak,
        above_idle_bytes: above,
        above_idle_per_model: above as f64 / model_bytes as f64,
        wire_bytes: wire,
        seconds,
        model_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_and_batch_reach_the_same_model() {
        let mut wire = Vec::new();
        feed(7, 33, 5, &mut wire).unwrap();
        let run = |mode| {
            let args = AggregateArgs {
                clients: 7,
                dim: 33,
                mode,
                seed: 5,
            };
            aggregate(args, &mut wire.as_slice()).unwrap()
        };
        let (s, b) = (run(Mode::Streaming), run(Mode::Batch));
        assert_eq!(s.model_sha256, b.model_sha256);
        assert_eq!(s.wire_bytes, wire.len() as u64);
    }

    #[test]
    fn a_truncated_stream_is_an_error_not_a_panic() {
        let mut wire = Vec::new();
        feed(2, 10, 1, &mut wire).unwrap();
        wire.truncate(wire.len() - 3);
        let args = AggregateArgs {
            clients: 2,
            dim: 10,
            mode: Mode::Streaming,
            seed: 1,
        };
        assert!(matches!(
            aggregate(args, &mut wire.as_slice()),
            Err(BenchError::Io(_))
        ));
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.extend([0; 16]);
        assert!(matches!(
            aggregate(args, &mut huge.as_slice()),
            Err(BenchError::Args(_))
        ));
    }
}
