//! `bench robust`: a robust aggregator on saved update sets, for the
//! cross-check against Flower's implementations (`scripts/robust/`).
//!
//! Each file holds one agent's update (`local − global`) as safetensors,
//! with its example count in the header's `num_examples` metadata (1 when
//! absent). The global model is taken as zero, so the next model *is* the
//! aggregate, computed by the engine's own [`tg_strategy::Robust`] around
//! FedAvg with a server step of 1: exactly what a coordinator would apply.

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tg_strategy::{ClientUpdate, FedAvg, Robust, Sampler, Strategy};
use tg_types::robust::{AggregatorKind, RobustSpec};
use tg_types::{AgentId, Parameters};

use crate::{BenchError, Result};

/// Update files bigger than this are refused (they are read whole).
const MAX_FILE_BYTES: u64 = 1 << 30;

/// What to aggregate.
#[derive(Clone, Debug)]
pub struct RobustArgs {
    /// One safetensors file per agent, in agent order.
    pub files: Vec<PathBuf>,
    /// The rule.
    pub kind: AggregatorKind,
    /// Attackers it is sized for.
    pub f: u32,
    /// `norm-bound`: the bound (default: the median norm).
    pub norm_bound: Option<f64>,
}

/// The aggregate.
#[derive(Clone, Debug, Serialize)]
pub struct RobustReport {
    /// The rule.
    pub aggregator: String,
    /// f.
    pub byzantine: u32,
    /// Updates read.
    pub clients: usize,
    /// The aggregate, tensor by tensor (name, shape, values).
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Each update's screening: (file index, score, admitted).
    pub screened: Vec<(usize, f64, bool)>,
    /// SHA-256 of the aggregate's safetensors bytes.
    pub sha256: String,
    /// Wall time of the aggregation alone, in milliseconds.
    pub aggregate_ms: f64,
}

/// Reads the files and aggregates them.
pub fn run(args: &RobustArgs) -> Result<RobustReport> {
    if args.files.is_empty() {
        return Err(BenchError::Args("give at least one update file".into()));
    }
    let mut updates = Vec::with_capacity(args.files.len());
    for (i, path) in args.files.iter().enumerate() {
        let size = std::fs::metadata(path)?.len();
        if size > MAX_FILE_BYTES {
            return Err(BenchError::Args(format!(
                "{} is {size} bytes, over the {MAX_FILE_BYTES}-byte limit",
                path.display()
            )));
        }
        let bytes = std::fs::read(path)?;
        let update = Parameters::from_safetensors(&bytes)
            .map_err(|e| BenchError::Args(format!("{}: {e}", path.display())))?;
        let meta = Parameters::safetensors_metadata(&bytes)
            .map_err(|e| BenchError::Args(format!("{}: {e}", path.display())))?;
        let num_examples = match meta.get("num_examples") {
            Some(n) => n.parse::<u64>().map_err(|_| {
                BenchError::Args(format!(
                    "{}: num_examples = {n:?} is not a whole number",
                    path.display()
                ))
            })?,
            None => 1,
        };
        updates.push(ClientUpdate {
            agent: AgentId::numbered(i),
            update,
            num_examples,
            control_delta: None,
        });
    }
    let global = updates[0].update.zeros_like();
    let inner = Box::new(FedAvg::new(Sampler::new(1.0, 1)?, 1.0));
    let spec = RobustSpec {
        kind: args.kind,
        f: args.f,
        norm_bound: args.norm_bound,
    };
    let mut strategy = Robust::new(inner, spec)?;
    let started = std::time::Instant::now();
    let next = strategy.aggregate_train(1, &global, &updates)?;
    let aggregate_ms = started.elapsed().as_secs_f64() * 1e3;
    let screened = strategy
        .screened()
        .into_iter()
        .map(|s| {
            let i = updates
                .iter()
                .position(|u| u.agent == s.agent)
                .unwrap_or(usize::MAX);
            (i, s.score, s.admitted)
        })
        .collect();
    Ok(RobustReport {
        aggregator: args.kind.to_string(),
        byzantine: args.f,
        clients: updates.len(),
        sha256: hex::encode(Sha256::digest(next.to_safetensors()?)),
        tensors: next
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.shape.clone(), t.data.clone()))
            .collect(),
        screened,
        aggregate_ms,
    })
}
