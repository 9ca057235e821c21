//! Job specifications: what to train, on which data, with which strategy.
//!
//! Every textual form a user types (`dirichlet:0.5`, `mnist-idx:DIR`,
//! `fedprox`) is parsed here into a typed value; invalid text never gets past
//! this module.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Parameters;

/// A spec string that does not parse, with the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {what}: expected {expected}")]
pub struct SpecError {
    /// What was being parsed (e.g. "partition").
    pub what: &'static str,
    /// The offending text.
    pub input: String,
    /// The accepted forms.
    pub expected: &'static str,
}

fn spec_err(what: &'static str, input: &str, expected: &'static str) -> SpecError {
    SpecError {
        what,
        input: input.to_owned(),
        expected,
    }
}

/// Where training data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
#[non_exhaustive]
pub enum DatasetSpec {
    /// UCI optical digits (1,797 × 64), embedded in the binary.
    Digits,
    /// A directory holding MNIST-format IDX files (`train-images-idx3-ubyte`, …).
    MnistIdx(PathBuf),
    /// A CSV file: first column the integer label, the rest numeric features.
    Csv(PathBuf),
}

const DATASET_FORMS: &str = "`digits`, `mnist-idx:DIR` or `csv:PATH`";

impl FromStr for DatasetSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "digits" => Ok(Self::Digits),
            Some(("mnist-idx", p)) if !p.is_empty() => Ok(Self::MnistIdx(p.into())),
            Some(("csv", p)) if !p.is_empty() => Ok(Self::Csv(p.into())),
            _ => Err(spec_err("dataset", s, DATASET_FORMS)),
        }
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Digits => f.write_str("digits"),
            Self::MnistIdx(p) => write!(f, "mnist-idx:{}", p.display()),
            Self::Csv(p) => write!(f, "csv:{}", p.display()),
        }
    }
}

/// How the pooled training set is split among clients.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
#[non_exhaustive]
pub enum PartitionSpec {
    /// Uniformly at random, equal sizes.
    Iid,
    /// Label skew: per class, client shares drawn from Dirichlet(α). Smaller α is more skewed.
    Dirichlet(f64),
    /// Sort by label, cut into `clients × K` shards, give each client K shards.
    Shards(usize),
}

const PARTITION_FORMS: &str = "`iid`, `dirichlet:A` with A > 0, or `shards:K` with K ≥ 1";

impl FromStr for PartitionSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || spec_err("partition", s, PARTITION_FORMS);
        match s.split_once(':') {
            None if s == "iid" => Ok(Self::Iid),
            Some(("dirichlet", a)) => match a.parse::<f64>() {
                Ok(a) if a.is_finite() && a > 0.0 => Ok(Self::Dirichlet(a)),
                _ => Err(bad()),
            },
            Some(("shards", k)) => match k.parse::<usize>() {
                Ok(k) if k >= 1 => Ok(Self::Shards(k)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for PartitionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Iid => f.write_str("iid"),
            Self::Dirichlet(a) => write!(f, "dirichlet:{a}"),
            Self::Shards(k) => write!(f, "shards:{k}"),
        }
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
        impl TryFrom<String> for $t {
            type Error = SpecError;
            fn try_from(s: String) -> Result<Self, SpecError> {
                s.parse()
            }
        }
    };
}
string_serde!(DatasetSpec);
string_serde!(PartitionSpec);

/// Model architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ModelKind {
    /// Multi-layer perceptron with one hidden ReLU layer.
    Mlp,
    /// Small convolutional network (conv-relu-pool ×2, linear); needs image data.
    Cnn,
}

impl FromStr for ModelKind {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mlp" => Ok(Self::Mlp),
            "cnn" => Ok(Self::Cnn),
            _ => Err(spec_err("model", s, "`mlp` or `cnn`")),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mlp => "mlp",
            Self::Cnn => "cnn",
        })
    }
}

/// Aggregation strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StrategyKind {
    /// Sample-weighted averaging of client updates (McMahan et al. 2017).
    FedAvg,
    /// FedAvg with a proximal term μ/2‖w − w_global‖² in local training (Li et al. 2020).
    FedProx,
    /// Control variates correcting client drift (Karimireddy et al. 2020).
    Scaffold,
    /// Server-side Adam on the averaged pseudo-gradient (Reddi et al. 2021).
    FedAdam,
    /// Mixture-of-experts adapters: each expert averaged over the clients
    /// that used it, from Σ-able (weight·Δ, weight) pairs the clients send
    /// (`tg_strategy::ExpertWise`); works on a secure sum.
    ExpertWise,
}

impl FromStr for StrategyKind {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fedavg" => Ok(Self::FedAvg),
            "fedprox" => Ok(Self::FedProx),
            "scaffold" => Ok(Self::Scaffold),
            "fedadam" => Ok(Self::FedAdam),
            "expert-wise" => Ok(Self::ExpertWise),
            _ => Err(spec_err(
                "strategy",
                s,
                "`fedavg`, `fedprox`, `scaffold`, `fedadam` or `expert-wise`",
            )),
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FedAvg => "fedavg",
            Self::FedProx => "fedprox",
            Self::Scaffold => "scaffold",
            Self::FedAdam => "fedadam",
            Self::ExpertWise => "expert-wise",
        })
    }
}

/// Local optimizer used by agents.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OptimizerSpec {
    /// Plain stochastic gradient descent.
    Sgd,
    /// AdamW (decoupled weight decay).
    AdamW {
        /// Weight decay coefficient.
        weight_decay: f64,
    },
}

/// How a plaintext round's updates travel to the coordinator (secure rounds
/// have their own encoding).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
#[non_exhaustive]
pub enum Compression {
    /// Dense `f32`.
    #[default]
    None,
    /// The largest fraction of coordinates by magnitude, with error feedback
    /// (what is not sent is carried into the agent's next round).
    TopK(f64),
    /// 8-bit codes with one `f32` scale per block of values.
    Q8,
}

const COMPRESSION_FORMS: &str = "`none`, `q8`, or `topk:F` with 0 < F ≤ 1";

impl FromStr for Compression {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || spec_err("compression", s, COMPRESSION_FORMS);
        match s.split_once(':') {
            None if s == "none" => Ok(Self::None),
            None if s == "q8" => Ok(Self::Q8),
            Some(("topk", f)) => match f.parse::<f64>() {
                Ok(f) if f > 0.0 && f <= 1.0 => Ok(Self::TopK(f)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::TopK(x) => write!(f, "topk:{x}"),
            Self::Q8 => f.write_str("q8"),
        }
    }
}

string_serde!(Compression);

/// Local training hyper-parameters sent with every round.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the local data per round.
    pub local_epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// Local learning rate.
    pub learning_rate: f64,
    /// Local optimizer.
    pub optimizer: OptimizerSpec,
    /// Sample-level DP-SGD; when set, `local_epochs` and `batch_size` give
    /// way to its steps and expected batch.
    pub dp_sgd: Option<crate::privacy::DpSgdSpec>,
    /// How the update is sent (plaintext rounds).
    #[serde(default)]
    pub compress: Compression,
    /// Whether an agent whose owner's envelope (bytes per update, uplink)
    /// the update exceeds may send it top-k sparsified instead (set by the
    /// coordinator for plaintext rounds whose strategy folds sparse updates).
    #[serde(default)]
    pub adaptive_sparsity: bool,
    /// How long the coordinator waits for this round's replies from when it
    /// sends the request, in ms (plaintext rounds): an agent fits its upload
    /// into what is left after training.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// What the local objective adds to plain empirical risk, set by the strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LocalObjective {
    /// Plain loss.
    Plain,
    /// FedProx: adds μ/2‖w − w_global‖².
    Proximal {
        /// Proximal coefficient μ.
        mu: f32,
    },
    /// SCAFFOLD: corrects every gradient by (c − c_i) with the server control `c`.
    Scaffold {
        /// The server control variate c.
        server_control: Parameters,
    },
}

/// Hyper-parameters of the server-side strategy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StrategyConfig {
    /// Which strategy.
    pub kind: StrategyKind,
    /// FedProx μ.
    pub proximal_mu: f32,
    /// Server learning rate (FedAvg/FedProx/SCAFFOLD: global step size; FedAdam: η).
    pub server_lr: f32,
    /// FedAdam β1.
    pub beta1: f32,
    /// FedAdam β2.
    pub beta2: f32,
    /// FedAdam τ (adaptivity).
    pub tau: f32,
}

impl StrategyConfig {
    /// Defaults that work for the given strategy on small vision models.
    pub fn defaults_for(kind: StrategyKind) -> Self {
        Self {
            kind,
            proximal_mu: 0.01,
            server_lr: if kind == StrategyKind::FedAdam {
                0.01
            } else {
                1.0
            },
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        }
    }
}

/// A complete description of a federated training job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Data source.
    pub dataset: DatasetSpec,
    /// How data is split among clients.
    pub partition: PartitionSpec,
    /// Model architecture.
    pub model: ModelKind,
    /// Hidden width of the MLP.
    pub hidden: usize,
    /// Server strategy.
    pub strategy: StrategyConfig,
    /// Local training.
    pub train: TrainConfig,
    /// Number of rounds.
    pub rounds: u32,
    /// Number of clients (agents).
    pub clients: u32,
    /// Fraction of available clients sampled per round, in (0, 1].
    pub fraction: f64,
    /// Minimum number of results for a round to commit.
    pub min_clients: u32,
    /// Probability that a selected agent drops out of a round (fault injection).
    pub dropout: f64,
    /// Seed for every random choice (partition, init, sampling, shuffling)
    /// except DP noise and DP sampling, which come from the OS CSPRNG.
    pub seed: u64,
    /// Differential privacy, if the job has a budget.
    pub privacy: Option<crate::privacy::PrivacySpec>,
    /// Secure aggregation, if updates must reach the coordinator only as a sum.
    pub secure_aggregation: Option<SecureAggSpec>,
    /// Federated evaluation: every this many rounds (and after the last),
    /// agents evaluate the committed model on their own data; 0 = never.
    #[serde(default)]
    pub evaluate_every: u32,
    /// SIMULATION ONLY: the public seed the coordinator's DP noise is drawn
    /// from, so that a run reproduces. Such a run is not private; it is
    /// recorded here so that every view of the job can say so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated_noise_seed: Option<u64>,
    /// The rollout gate: each round's candidate is evaluated by agents
    /// (success counts on their held-out episodes) against the current
    /// model, and commits only if not shown worse beyond the margin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSpec>,
    /// A robust aggregation rule over individual updates (plaintext rounds
    /// only); `None` is the strategy's own example-weighted mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robust: Option<crate::robust::RobustSpec>,
    /// Reputation from the robust aggregator's flags: down-weighting, then
    /// exclusion from sampling (needs a screening `robust` rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation: Option<crate::reputation::ReputationPolicy>,
    /// The round logic runs in a TEE whose evidence agents verify, and
    /// agents seal their updates to its session key (plaintext rounds: the
    /// robust rules see each update inside the enclave only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attested_aggregator: bool,
}

/// The rollout gate's settings (`gate_margin`, `gate_episodes` in `[job]`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateSpec {
    /// How much worse than the current model (a difference of success
    /// rates, in [0, 1)) a candidate may be shown to be and still commit.
    pub margin: f64,
    /// Fewest evaluation episodes per model for the gate to judge.
    pub min_episodes: u64,
}

/// Secure aggregation settings of a job.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecureAggSpec {
    /// Bits per lane (arithmetic mod 2^B).
    pub bits: u32,
    /// L2 clipping norm of updates (bounds the encoding's range).
    pub clip: f64,
    /// Assumed fraction of clients colluding with the server.
    pub corrupt: f64,
    /// Assumed fraction of clients dropping out of a round.
    pub dropout: f64,
    /// Shared random-k sparsification: fraction of coordinates sent per round.
    pub keep_fraction: Option<f64>,
    /// Examples per unit of FedAvg weight inside the masked sum, as the job
    /// declares it (the coordinator cannot count agents' data); `None`: the
    /// in-process demo, which holds every shard, uses the mean shard size.
    #[serde(default)]
    pub weight_scale: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_forms() {
        assert_eq!(
            "digits".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::Digits
        );
        assert_eq!(
            "csv:/x.csv".parse::<DatasetSpec>().unwrap(),
            DatasetSpec::Csv("/x.csv".into())
        );
        assert!("csv:".parse::<DatasetSpec>().is_err());
        assert_eq!(
            "dirichlet:0.3".parse::<PartitionSpec>().unwrap(),
            PartitionSpec::Dirichlet(0.3)
        );
        assert!("dirichlet:0".parse::<PartitionSpec>().is_err());
        assert!("dirichlet:nan".parse::<PartitionSpec>().is_err());
        assert!("shards:0".parse::<PartitionSpec>().is_err());
        assert_eq!(
            "shards:2".parse::<PartitionSpec>().unwrap(),
            PartitionSpec::Shards(2)
        );
        assert_eq!(
            "scaffold".parse::<StrategyKind>().unwrap(),
            StrategyKind::Scaffold
        );
        let e = "fedsgd".parse::<StrategyKind>().unwrap_err();
        assert!(e.to_string().contains("fedavg"));
    }

    #[test]
    fn specs_serialize_as_their_text() {
        let j = serde_json::to_string(&PartitionSpec::Dirichlet(0.5)).unwrap();
        assert_eq!(j, "\"dirichlet:0.5\"");
        assert_eq!(
            serde_json::from_str::<PartitionSpec>(&j).unwrap(),
            PartitionSpec::Dirichlet(0.5)
        );
        assert!(serde_json::from_str::<DatasetSpec>("\"nope\"").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["iid", "dirichlet:0.5", "shards:3"] {
            assert_eq!(s.parse::<PartitionSpec>().unwrap().to_string(), s);
        }
    }
}
