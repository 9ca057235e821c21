//! The `[secure_aggregation]` section: SecAgg+ (the coordinator learns only
//! the sum), its lane width, clip, threat assumptions and sparsity.

use serde::{Deserialize, Serialize};
use tg_types::spec::{JobSpec, SecureAggSpec};

use crate::{Facts, Result, Runner, invalid};

/// Bits per lane by default.
pub const DEFAULT_BITS: u32 = 20;
/// L2 clip of each update by default.
pub const DEFAULT_CLIP: f64 = 10.0;
/// Assumed fraction of corrupt clients by default.
pub const DEFAULT_CORRUPT: f64 = 0.05;
/// Assumed fraction of a fleet's clients that drop out of a round.
pub const DEFAULT_FLEET_DROPOUT: f64 = 0.3;

/// SecAgg+ settings: every key optional.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureSection {
    /// Bits per lane of the masked updates (arithmetic mod 2^B).
    pub bits: Option<u32>,
    /// L2 clip of each update before encoding.
    pub clip: Option<f64>,
    /// Assumed fraction of clients colluding with the coordinator.
    pub corrupt: Option<f64>,
    /// Assumed fraction of clients dropping out of a round.
    pub dropout: Option<f64>,
    /// Shared random-k: the fraction of coordinates sent each round.
    pub sparsity: Option<f64>,
    /// Examples per unit of FedAvg weight (default: the dataset's training
    /// examples per client).
    pub weight_scale: Option<f64>,
}

/// A validated section.
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    bits: u32,
    clip: f64,
    corrupt: f64,
    dropout: f64,
    sparsity: Option<f64>,
    weight_scale: Option<f64>,
}

/// The dropout fraction the mask graph is sized for under fault injection.
/// A client drops at training with probability p and at each of the 4 later
/// stages with p/10; the graph must survive the *realised* fraction, which
/// for few clients strays far from its mean, so two binomial standard
/// deviations are added (at least 10 %, at most 85 %).
fn assumed_dropout(p: f64, clients: u32) -> f64 {
    let total = 1.0 - (1.0 - p) * (1.0 - p / 10.0).powi(4);
    let n = f64::from(clients.max(1));
    (total + 2.0 * (total * (1.0 - total) / n).sqrt()).clamp(0.1, 0.85)
}

impl Choice {
    pub(crate) fn parse(s: &SecureSection, spec: &JobSpec, runner: Runner) -> Result<Self> {
        let key = |k: &str| format!("secure_aggregation.{k}");
        let bits = s.bits.unwrap_or(DEFAULT_BITS);
        if !(2..=32).contains(&bits) {
            return Err(invalid(
                format!("secure_aggregation.bits = {bits}"),
                "lanes are between 2 and 32 bits wide",
                "use e.g. bits = 20 (more bits: more room for the sum, more bytes)",
            )
            .at(&key("bits")));
        }
        let clip = s.clip.unwrap_or(DEFAULT_CLIP);
        if !(clip.is_finite() && clip > 0.0) {
            return Err(invalid(
                format!("secure_aggregation.clip = {clip}"),
                "each update is clipped to this L2 norm before encoding; it must be positive",
                "use e.g. clip = 10.0",
            )
            .at(&key("clip")));
        }
        if let Some(f) = s.sparsity.filter(|f| !(*f > 0.0 && *f <= 1.0)) {
            return Err(invalid(
                format!("secure_aggregation.sparsity = {f}"),
                "the fraction of coordinates sent must be in (0, 1]",
                "use e.g. sparsity = 0.5",
            )
            .at(&key("sparsity")));
        }
        let corrupt = s.corrupt.unwrap_or(DEFAULT_CORRUPT);
        let dropout = s.dropout.unwrap_or(match runner {
            Runner::Simulation => assumed_dropout(spec.dropout, spec.clients),
            Runner::Fleet => DEFAULT_FLEET_DROPOUT,
        });
        for (k, v) in [("corrupt", corrupt), ("dropout", dropout)] {
            if !(0.0..1.0).contains(&v) {
                return Err(invalid(
                    format!("secure_aggregation.{k} = {v}"),
                    "an assumed fraction of clients must be in [0, 1)",
                    format!("use e.g. {k} = 0.3"),
                )
                .at(&key(k)));
            }
        }
        if let Some(w) = s.weight_scale.filter(|w| !(w.is_finite() && *w > 0.0)) {
            return Err(invalid(
                format!("secure_aggregation.weight_scale = {w}"),
                "the examples per unit of weight must be positive",
                "use about the mean number of examples per agent",
            )
            .at(&key("weight_scale")));
        }
        Ok(Self {
            bits,
            clip,
            corrupt,
            dropout,
            sparsity: s.sparsity,
            weight_scale: s.weight_scale,
        })
    }

    /// The spec before the facts are known.
    pub(crate) fn sketch(&self) -> SecureAggSpec {
        SecureAggSpec {
            bits: self.bits,
            clip: self.clip,
            corrupt: self.corrupt,
            dropout: self.dropout,
            keep_fraction: self.sparsity,
            weight_scale: self.weight_scale,
        }
    }

    /// The spec for the data: the weight scale resolved (declared, else the
    /// dataset's training examples per client, which every runner computes
    /// alike), and refused if the bits cannot hold the sum of every client.
    /// Under distributed DP the calibration sizes the encoding itself.
    pub(crate) fn size(
        &self,
        spec: &JobSpec,
        facts: &Facts,
        distributed: bool,
    ) -> Result<SecureAggSpec> {
        let mut out = self.sketch();
        // Unknown data (the Python SDK's clients report their counts only
        // with their updates): without a declared scale every client
        // weighs the same, rather than by a raw count the clip would cut.
        out.weight_scale = match self.weight_scale {
            Some(s) => Some(s),
            None if facts.train_examples == 0 => None,
            None => Some((facts.train_examples as f64 / f64::from(spec.clients.max(1))).max(1.0)),
        };
        if !distributed && facts.num_parameters > 0 {
            tg_compress::Encoding::new(
                facts.num_parameters,
                self.bits,
                self.clip,
                spec.clients as usize,
                0.0,
                [0; 32],
            )
            .map_err(|e| {
                invalid(
                    format!(
                        "secure aggregation with bits = {} and clip = {}",
                        self.bits, self.clip
                    ),
                    e.to_string(),
                    "use more bits (up to 32), or a smaller clip",
                )
                .at("secure_aggregation.bits")
            })?;
        }
        Ok(out)
    }
}
