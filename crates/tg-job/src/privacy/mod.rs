//! The `[privacy]` section: sample-level DP-SGD on every client
//! (`local-sgd`), user-level DP-FedAvg at the coordinator (`central`), or
//! user-level DP under secure aggregation with Skellam noise shares
//! (`distributed`). The noise multiplier is a number, or `auto`: the least
//! noise with which every planned round fits the budget.

use serde::{Deserialize, Serialize};
use tg_privacy::{AccountantKind, ClipNorm, Delta, Epsilon, NoiseMultiplier, SamplingRate};
use tg_types::privacy::{
    BudgetAgainst, CentralDpSpec, ClipSpec, DistributedDpSpec, DpMode, DpSgdSpec, PrivacySpec,
};
use tg_types::spec::{JobSpec, ModelKind};

use crate::{JobError, JobSection, Result, Runner, from_privacy, invalid};

mod calibrate;

/// Andrew et al. (2021): initial C, target quantile γ, step η, and σ_b = m/20.
const ADAPTIVE_INITIAL_CLIP: f64 = 0.1;
const ADAPTIVE_TARGET_QUANTILE: f64 = 0.5;
const ADAPTIVE_LEARNING_RATE: f64 = 0.2;
const ADAPTIVE_COUNT_NOISE_PER_CLIENT: f64 = 1.0 / 20.0;
/// Default per-example clipping norm of DP-SGD (Opacus' customary 1.0).
const DEFAULT_MAX_GRAD_NORM: f64 = 1.0;
/// Default L2 clip of each client's vector under distributed DP.
const DEFAULT_DISTRIBUTED_CLIP: f64 = 1.0;
/// Default δ.
pub const DEFAULT_DELTA: f64 = 1e-5;

/// A number, or a word naming a rule (`auto`, `adaptive`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    /// A value.
    Number(f64),
    /// A rule.
    Word(String),
}

/// Differential privacy: every key optional except `mode` and
/// `target_epsilon`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySection {
    /// `local-sgd`, `central` or `distributed`.
    pub mode: Option<String>,
    /// The budget ε the job must not exceed.
    pub target_epsilon: Option<f64>,
    /// δ of the (ε, δ) guarantee (default 1e-5).
    pub delta: Option<f64>,
    /// `pld` (default) or `rdp`; distributed DP is always accounted by
    /// the Skellam accountant.
    pub accountant: Option<String>,
    /// σ, or `auto` (the default): the least noise that fits the budget.
    pub noise_multiplier: Option<Setting>,
    /// Clip: per client update (`central`: a norm or `adaptive`, the
    /// default; `distributed`: a norm, default 1.0) or per example
    /// (`local-sgd`, default 1.0).
    pub clip: Option<Setting>,
    /// `local-sgd`: the per-example clip (the same as `clip`).
    pub max_grad_norm: Option<f64>,
    /// `local-sgd`: Poisson rate per example (default from the data:
    /// batch size ÷ mean examples per client).
    pub sampling_rate: Option<f64>,
    /// `local-sgd`: DP-SGD steps per round (default: local epochs ÷ rate).
    pub steps_per_round: Option<u32>,
    /// `central`/`distributed`: the users sampling is over (default: the
    /// job's clients; in a simulation it replaces them).
    pub population: Option<u32>,
    /// `distributed`: whom the budget stops on, `others` (default:
    /// amplified by sampling) or `coordinator` (no amplification).
    pub budget_against: Option<String>,
    /// SIMULATION ONLY (`central`): draw the coordinator's noise and client
    /// sample from this public seed, so that a run reproduces bit for bit.
    /// Anyone who knows the seed can remove the noise: the run is not
    /// private, is labelled so in every output, and a coordinator refuses
    /// it unless started with `--allow-simulated`.
    pub simulated_noise_seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    LocalSgd,
    Central,
    Distributed,
}

/// A validated section, calibrated by [`Choice::calibrate`].
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    mode: Mode,
    target: Epsilon,
    delta: Delta,
    accountant: AccountantKind,
    /// None: calibrate to the budget.
    sigma: Option<NoiseMultiplier>,
    /// None: adaptive (central only).
    clip: Option<ClipNorm>,
    sampling_rate: Option<SamplingRate>,
    steps_per_round: Option<u32>,
    budget_against: BudgetAgainst,
    /// The job's quorum as written, which distributed DP takes as its
    /// survivor floor.
    min_clients: Option<u32>,
    /// The users sampling is over, when given.
    population: Option<u32>,
    /// SIMULATION: the public seed of the coordinator's noise.
    simulated_noise_seed: Option<u64>,
}

fn key(k: &str) -> String {
    format!("privacy.{k}")
}

fn not_for(k: &str, mode: &str, instead: &str) -> JobError {
    invalid(
        format!("privacy.{k} with mode = \"{mode}\""),
        format!("{k} has no meaning for {mode} DP"),
        instead.to_owned(),
    )
    .at(&key(k))
}

impl Choice {
    /// Whether agents train with DP-SGD (local per-example noise).
    pub(crate) fn is_dp_sgd(&self) -> bool {
        matches!(self.mode, Mode::LocalSgd)
    }

    /// Validates `p` and shapes the federation it implies: with user-level
    /// DP the population is sampled (in a simulation it is the clients) and
    /// the default quorum drops to 1, since Poisson sampling may pick few.
    pub(crate) fn parse(
        p: &PrivacySection,
        job: &JobSection,
        spec: &mut JobSpec,
        runner: Runner,
    ) -> Result<Self> {
        let mode = match p.mode.as_deref() {
            Some("local-sgd") => Mode::LocalSgd,
            Some("central") => Mode::Central,
            Some("distributed") => Mode::Distributed,
            Some(other) => {
                return Err(invalid(
                    format!("privacy.mode = \"{other}\""),
                    "DP is sample-level DP-SGD (local-sgd), DP-FedAvg at the coordinator (central), or Skellam noise under secure aggregation (distributed)",
                    "use mode = \"local-sgd\", \"central\" or \"distributed\"",
                )
                .at(&key("mode")));
            }
            None => {
                return Err(invalid(
                    "privacy without a mode",
                    "the kind of differential privacy must be chosen",
                    "set mode = \"central\", \"local-sgd\" or \"distributed\" (--dp MODE)",
                )
                .at(&key("mode")));
            }
        };
        let name = p.mode.as_deref().unwrap_or_default();
        let target = p.target_epsilon.ok_or_else(|| {
            invalid(
                "privacy without target_epsilon",
                "a private job needs a budget to stay within",
                "add e.g. target_epsilon = 8 (--target-epsilon 8)",
            )
            .at(&key("target_epsilon"))
        })?;
        let target = Epsilon::new(target).map_err(|e| from_privacy(&key("target_epsilon"), e))?;
        let delta = Delta::new(p.delta.unwrap_or(DEFAULT_DELTA))
            .map_err(|e| from_privacy(&key("delta"), e))?;
        let accountant = match (mode, p.accountant.as_deref()) {
            (Mode::Distributed, None | Some("skellam")) => AccountantKind::Skellam,
            (Mode::Distributed, Some(other)) => {
                return Err(invalid(
                    format!("privacy.accountant = \"{other}\" with mode = \"distributed\""),
                    "distributed DP adds integer (Skellam) noise, which the Skellam accountant accounts",
                    "remove accountant, or use \"skellam\"",
                )
                .at(&key("accountant")));
            }
            (_, None | Some("pld")) => AccountantKind::Pld,
            (_, Some("rdp")) => AccountantKind::Rdp,
            (_, Some(other)) => {
                return Err(invalid(
                    format!("privacy.accountant = \"{other}\""),
                    "DP-SGD and DP-FedAvg add Gaussian noise, accounted by PLD or RDP",
                    "use \"pld\" (tightest) or \"rdp\"",
                )
                .at(&key("accountant")));
            }
        };
        let sigma = match &p.noise_multiplier {
            Some(Setting::Number(_)) if mode == Mode::Distributed => {
                return Err(invalid(
                    "privacy.noise_multiplier with mode = \"distributed\"",
                    "distributed DP calibrates its noise to the budget together with the encoding (the noise must fit in the lanes)",
                    "remove noise_multiplier (or set it to \"auto\")",
                )
                .at(&key("noise_multiplier")));
            }
            None => None,
            Some(Setting::Word(w)) if w == "auto" => None,
            Some(Setting::Number(v)) => Some(
                NoiseMultiplier::new(*v).map_err(|e| from_privacy(&key("noise_multiplier"), e))?,
            ),
            Some(Setting::Word(w)) => {
                return Err(invalid(
                    format!("privacy.noise_multiplier = \"{w}\""),
                    "it is neither a number nor `auto`",
                    "use e.g. 1.1, or \"auto\" to calibrate to the budget",
                )
                .at(&key("noise_multiplier")));
            }
        };
        let budget_against = match p.budget_against.as_deref() {
            None | Some("others") => BudgetAgainst::Others,
            Some("coordinator") if mode == Mode::Distributed => BudgetAgainst::Coordinator,
            Some("coordinator") => {
                return Err(invalid(
                    format!("privacy.budget_against = \"coordinator\" with mode = \"{name}\""),
                    "central DP trusts the coordinator to add the noise (no protection against it), and DP-SGD clients sample their own examples (amplification already holds against it)",
                    "use mode = \"distributed\", or leave budget_against at its default",
                )
                .at(&key("budget_against")));
            }
            Some(other) => {
                return Err(invalid(
                    format!("privacy.budget_against = \"{other}\""),
                    "the budget stops on ε against everyone but the coordinator, or against the coordinator",
                    "use \"others\" or \"coordinator\"",
                )
                .at(&key("budget_against")));
            }
        };
        if p.simulated_noise_seed.is_some() && mode != Mode::Central {
            return Err(invalid(
                format!("privacy.simulated_noise_seed with mode = \"{name}\""),
                "only the coordinator's noise (central DP) can be simulated from a seed; the agents' noise always comes from their OS",
                "remove simulated_noise_seed, or use mode = \"central\"",
            )
            .at(&key("simulated_noise_seed")));
        }
        let number = |k: &str, v: f64| ClipNorm::new(v).map_err(|e| from_privacy(&key(k), e));
        let clip = match (mode, &p.clip, p.max_grad_norm) {
            (_, Some(_), Some(_)) => {
                return Err(invalid(
                    "privacy.clip and privacy.max_grad_norm together",
                    "both name DP-SGD's per-example clip",
                    "give one of them",
                )
                .at(&key("max_grad_norm")));
            }
            (Mode::LocalSgd, None, Some(v)) => Some(number("max_grad_norm", v)?),
            (_, None, Some(_)) => {
                return Err(not_for(
                    "max_grad_norm",
                    name,
                    "user-level DP clips each client's update: use clip",
                ));
            }
            (_, Some(Setting::Number(v)), None) => Some(number("clip", *v)?),
            (Mode::Central, Some(Setting::Word(w)), None) if w == "adaptive" => None,
            (_, Some(Setting::Word(w)), None) if w == "adaptive" => {
                return Err(invalid(
                    format!("privacy.clip = \"adaptive\" with mode = \"{name}\""),
                    "adaptive clipping tracks the median update norm with a noised count, which only central DP releases",
                    "give a norm, e.g. clip = 1.0",
                )
                .at(&key("clip")));
            }
            (_, Some(Setting::Word(w)), None) => {
                return Err(invalid(
                    format!("privacy.clip = \"{w}\""),
                    "it is neither a number nor `adaptive`",
                    "use e.g. clip = 1.0",
                )
                .at(&key("clip")));
            }
            (Mode::Central, None, None) => None,
            (Mode::LocalSgd, None, None) => Some(number("clip", DEFAULT_MAX_GRAD_NORM)?),
            (Mode::Distributed, None, None) => Some(number("clip", DEFAULT_DISTRIBUTED_CLIP)?),
        };
        let mut sampling_rate = None;
        if mode == Mode::LocalSgd {
            if p.population.is_some() {
                return Err(not_for(
                    "population",
                    name,
                    "sample-level DP protects each client's examples; there is no user sampling: remove population, or use mode = \"central\"",
                ));
            }
            if spec.model != ModelKind::Mlp {
                return Err(invalid(
                    format!("model = {} with DP-SGD", spec.model),
                    "DP-SGD here computes exact per-example gradients for linear layers only",
                    "use model = mlp",
                )
                .at("model"));
            }
            if let Some(q) = p.sampling_rate {
                sampling_rate =
                    Some(SamplingRate::new(q).map_err(|e| from_privacy(&key("sampling_rate"), e))?);
            }
            if p.steps_per_round == Some(0) {
                return Err(invalid(
                    "privacy.steps_per_round = 0",
                    "a round must take at least one step",
                    "use e.g. steps_per_round = 20",
                )
                .at(&key("steps_per_round")));
            }
        } else {
            for (given, k) in [
                (p.sampling_rate.is_some(), "sampling_rate"),
                (p.steps_per_round.is_some(), "steps_per_round"),
            ] {
                if given {
                    return Err(not_for(
                        k,
                        name,
                        "user-level DP samples clients at the job's fraction; remove it",
                    ));
                }
            }
            if let Some(n) = p.population {
                if n == 0 {
                    return Err(invalid(
                        "privacy.population = 0",
                        "there is nobody to protect or to train",
                        "use the number of users, e.g. population = 500",
                    )
                    .at(&key("population")));
                }
                match runner {
                    Runner::Simulation => {
                        if job.clients.is_some_and(|c| c != n) {
                            return Err(invalid(
                                format!("population = {n} with clients = {}", spec.clients),
                                "in a simulation every user of the population is one simulated client",
                                "give only the population (--population)",
                            )
                            .at(&key("population")));
                        }
                        spec.clients = n;
                        if spec.min_clients > n {
                            spec.min_clients = n;
                        }
                    }
                    Runner::Fleet => {
                        if n < spec.clients {
                            return Err(invalid(
                                format!("population = {n} with clients = {}", spec.clients),
                                "the population sampling is over includes every planned client",
                                format!("use population ≥ {}", spec.clients),
                            )
                            .at(&key("population")));
                        }
                    }
                }
            }
            if job.min_clients.is_none() {
                spec.min_clients = 1;
            }
        }
        Ok(Self {
            mode,
            target,
            delta,
            accountant,
            sigma,
            clip,
            sampling_rate,
            steps_per_round: p.steps_per_round,
            budget_against,
            min_clients: job.min_clients,
            population: p.population,
            simulated_noise_seed: p.simulated_noise_seed,
        })
    }

    pub(crate) fn simulated_noise_seed(&self) -> Option<u64> {
        self.simulated_noise_seed
    }

    pub(crate) fn is_distributed(&self) -> bool {
        self.mode == Mode::Distributed
    }

    /// The spec with placeholder numbers: only its mode is meaningful.
    pub(crate) fn sketch(&self) -> Option<PrivacySpec> {
        let s = NoiseMultiplier::new(1.0).ok()?;
        let q = SamplingRate::new(1.0).ok()?;
        let c = ClipNorm::new(1.0).ok()?;
        let mode = match self.mode {
            Mode::LocalSgd => DpMode::LocalSgd(DpSgdSpec {
                noise_multiplier: s,
                max_grad_norm: c,
                sampling_rate: q,
                steps_per_round: 1,
            }),
            Mode::Central => DpMode::Central(CentralDpSpec {
                noise_multiplier: s,
                clip: ClipSpec::Fixed { norm: c },
                client_sampling_rate: q,
                population: 1,
            }),
            Mode::Distributed => DpMode::Distributed(DistributedDpSpec {
                clip: c,
                client_sampling_rate: q,
                population: 1,
                min_survivors: 1,
                central_variance: 1.0,
                scale: 1.0,
                dimension: 1,
                max_clients: 1,
            }),
        };
        Some(PrivacySpec {
            mode,
            target_epsilon: self.target,
            delta: self.delta,
            accountant: self.accountant,
            budget_against: self.budget_against,
        })
    }
}
