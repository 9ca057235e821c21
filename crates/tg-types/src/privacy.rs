//! What a job promises about privacy, and how each round spends it.
//!
//! Design decision: a job states one budget (ε, δ) and one mechanism — user-level
//! DP-FedAvg at the coordinator ([`DpMode::Central`]) or sample-level DP-SGD
//! on each agent ([`DpMode::LocalSgd`]). Every number is a validated type from
//! `tg-privacy`, so a spec that deserializes is one the accountants can answer.

use serde::{Deserialize, Serialize};
use tg_privacy::{
    AccountantKind, ClipNorm, Delta, Epsilon, GaussianSteps, NoiseMultiplier, Quantile,
    SamplingRate,
};

/// A job's privacy budget and mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrivacySpec {
    /// Which mechanism spends the budget.
    pub mode: DpMode,
    /// ε the job must never exceed.
    pub target_epsilon: Epsilon,
    /// δ of the (ε, δ) guarantee.
    pub delta: Delta,
    /// Accountant that turns the ledger into ε.
    pub accountant: AccountantKind,
    /// Which ε the budget stops on (distributed DP): against everyone but
    /// the coordinator, with sampling amplification (the default), or
    /// against the coordinator itself, which picks the sample (no
    /// amplification).
    #[serde(default)]
    pub budget_against: BudgetAgainst,
}

/// The party a job's budget is spent against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BudgetAgainst {
    /// Everyone but the coordinator: Poisson sampling amplifies privacy.
    #[default]
    Others,
    /// The coordinator, which chooses the sample: no amplification.
    Coordinator,
}

impl BudgetAgainst {
    /// How the choice prints.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Others => {
                "epsilon (against parties other than the coordinator, with sampling amplification)"
            }
            Self::Coordinator => {
                "epsilon (against the coordinator, which picks the sample: no amplification)"
            }
        }
    }
}

/// The DP mechanism of a job.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DpMode {
    /// User-level DP-FedAvg: clip each client's update, add Gaussian noise to
    /// the sum at the coordinator (trusted to add it), Poisson client sampling.
    Central(CentralDpSpec),
    /// Sample-level DP-SGD inside every agent's local training.
    LocalSgd(DpSgdSpec),
    /// User-level DP under secure aggregation: every client adds a Skellam
    /// noise share to its encoded update, so the coordinator never holds a
    /// noiseless sum (Agarwal, Kairouz & Liu 2021).
    Distributed(DistributedDpSpec),
}

/// Distributed DP with Skellam noise inside secure aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistributedDpSpec {
    /// L2 clip of each client's encoded vector (update and weight lane).
    pub clip: ClipNorm,
    /// Probability that each client takes part in a round (Poisson sampling).
    pub client_sampling_rate: SamplingRate,
    /// Number of clients sampling is over.
    pub population: u32,
    /// The fewest survivors any round may unmask with; the encoding leaves
    /// room for the per-client noise this floor implies.
    pub min_survivors: u32,
    /// Variance of the Skellam noise in every unmasked sum, in integer units.
    /// Each round splits it over that round's survivor minimum (see
    /// [`DistributedDpSpec::round_noise`]).
    pub central_variance: f64,
    /// Integer units per unit of the (rotated) update: the encoding's scale.
    pub scale: f64,
    /// Encoded length (a power of two).
    pub dimension: u64,
    /// Upper bound on clients per round the encoding is sized for.
    pub max_clients: u32,
}

impl DistributedDpSpec {
    /// For a round with `participants` sampled clients: (survivor floor,
    /// per-client variance). Every round uses exactly the release the ledger
    /// charges — the per-client share of the central variance at the floor,
    /// on the calibrated scale — and honest clients refuse to unmask with
    /// fewer survivors, so every released sum carries at least the charged
    /// noise (more when more survive). None if the sample cannot reach the floor.
    pub fn round_noise(&self, participants: u32) -> Option<(u32, f64)> {
        let floor = self.min_survivors.max(1);
        (floor <= participants).then(|| (floor, self.per_client_variance()))
    }

    /// Each client's noise variance, in integer units.
    pub fn per_client_variance(&self) -> f64 {
        self.central_variance / f64::from(self.min_survivors.max(1))
    }

    /// The release one round makes, as the ledger records it.
    pub fn release(
        &self,
        delta: Delta,
        rounds: u64,
    ) -> Result<SkellamRelease, tg_privacy::PrivacyError> {
        let params = self.skellam()?;
        let vs_coordinator =
            tg_privacy::skellam_epsilon(&params, SamplingRate::new(1.0)?, rounds, delta).0;
        Ok(SkellamRelease {
            clip: self.clip.get(),
            dimension: self.dimension,
            scale: self.scale,
            survivor_floor: self.min_survivors,
            per_client_variance: self.per_client_variance(),
            central_variance: self.central_variance,
            variance_unscaled: self.central_variance / (self.scale * self.scale),
            sampling_rate: self.client_sampling_rate.get(),
            epsilon_vs_coordinator: vs_coordinator,
        })
    }

    /// The Skellam release of one round: central variance
    /// `central_variance / scale²` in the unscaled domain, sensitivities
    /// grown by the worst case of stochastic rounding.
    pub fn skellam(&self) -> Result<tg_privacy::SkellamParams, tg_privacy::PrivacyError> {
        let mu = self.central_variance / (self.scale * self.scale);
        tg_privacy::SkellamParams::for_dimension(self.clip.get(), self.dimension, mu, self.scale)?
            .with_rounding(self.dimension, 0.0)
    }

    /// A Gaussian noise multiplier of the same central variance, for the ledger's records.
    pub fn equivalent_noise_multiplier(&self) -> f64 {
        self.central_variance.sqrt() / (self.scale * self.clip.get())
    }
}

/// User-level DP-FedAvg (McMahan et al. 2018; Andrew et al. 2021).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CentralDpSpec {
    /// Overall noise multiplier z of the round's release (update and, with
    /// adaptive clipping, the clip count together).
    pub noise_multiplier: NoiseMultiplier,
    /// How updates are clipped.
    pub clip: ClipSpec,
    /// Probability that each client takes part in a round (Poisson sampling).
    pub client_sampling_rate: SamplingRate,
    /// Number of clients sampling is over (the users being protected).
    pub population: u32,
}

/// Clipping of client updates in DP-FedAvg.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClipSpec {
    /// A fixed L2 bound.
    Fixed {
        /// C.
        norm: ClipNorm,
    },
    /// Quantile-tracking bound (Andrew et al. 2021, "Differentially private
    /// learning with adaptive clipping"): C ← C·exp(−η(b̃ − γ)) where b̃ is
    /// the noised fraction of clients whose update norm was ≤ C.
    Adaptive {
        /// C before the first round.
        initial: ClipNorm,
        /// γ, the fraction of updates meant to be unclipped.
        target_quantile: Quantile,
        /// η, the geometric step size.
        learning_rate: f64,
        /// σ_b, the std of the noise on the count of unclipped clients.
        count_noise_std: f64,
    },
}

/// Sample-level DP-SGD (Abadi et al. 2016) run by each agent.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpSgdSpec {
    /// Noise std divided by the per-example clipping norm.
    pub noise_multiplier: NoiseMultiplier,
    /// Per-example gradient clipping norm.
    pub max_grad_norm: ClipNorm,
    /// Probability that each example joins a step (Poisson sampling). Every
    /// agent uses the same rate, so its expected batch is proportional to its
    /// data and every agent's examples get the same (ε, δ).
    pub sampling_rate: SamplingRate,
    /// Optimizer steps per round.
    pub steps_per_round: u32,
}

impl PrivacySpec {
    /// ε after `rounds` identical rounds, by the job's accountant.
    pub fn epsilon_after(&self, rounds: u64) -> Result<f64, tg_privacy::PrivacyError> {
        if rounds == 0 {
            return Ok(0.0);
        }
        Ok(match self.mode {
            DpMode::Distributed(d) => {
                let q = match self.budget_against {
                    BudgetAgainst::Coordinator => SamplingRate::new(1.0)?,
                    BudgetAgainst::Others => d.client_sampling_rate,
                };
                tg_privacy::skellam_epsilon(&d.skellam()?, q, rounds, self.delta).0
            }
            _ => {
                let step = self.per_round()?;
                let all = GaussianSteps {
                    steps: step.steps * rounds,
                    ..step
                };
                tg_privacy::accountant::epsilon(self.accountant, &[all], self.delta).epsilon
            }
        })
    }

    /// What one round spends: for central DP, one release of the noised sum
    /// for the population; for local DP-SGD, each agent's steps — the same
    /// (q, σ, steps) on every agent, so the job's ε is every agent's; for
    /// distributed DP, one Skellam release recorded by its Gaussian-equivalent
    /// multiplier (the ledger's ε comes from the Skellam accountant).
    pub fn per_round(&self) -> Result<GaussianSteps, tg_privacy::PrivacyError> {
        Ok(match self.mode {
            DpMode::Central(c) => GaussianSteps {
                sampling_rate: c.client_sampling_rate,
                noise_multiplier: c.noise_multiplier,
                steps: 1,
            },
            DpMode::LocalSgd(s) => GaussianSteps {
                sampling_rate: s.sampling_rate,
                noise_multiplier: s.noise_multiplier,
                steps: u64::from(s.steps_per_round),
            },
            DpMode::Distributed(d) => GaussianSteps {
                sampling_rate: d.client_sampling_rate,
                noise_multiplier: NoiseMultiplier::new(d.equivalent_noise_multiplier())?,
                steps: 1,
            },
        })
    }

    /// `central` or `local-sgd`.
    pub const fn mode_name(&self) -> &'static str {
        match self.mode {
            DpMode::Central(_) => "central",
            DpMode::LocalSgd(_) => "local-sgd",
            DpMode::Distributed(_) => "distributed",
        }
    }
}

/// What one distributed-DP round released, recorded in its ledger row so
/// that its ε can be recomputed from the row alone:
/// `tensorguard privacy epsilon --accountant skellam --l2-sensitivity CLIP
/// --dimension D --variance MU --scale S --rounding-beta 0 --sampling-rate Q
/// --steps ROUNDS --delta δ` (see [`SkellamRelease::command`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkellamRelease {
    /// L2 clip of each client's vector (the L2 sensitivity, unscaled).
    pub clip: f64,
    /// Encoded length.
    pub dimension: u64,
    /// Integer units per unit of the update (pinned for the whole job).
    pub scale: f64,
    /// Fewest survivors any round unmasks with (honest clients refuse fewer).
    pub survivor_floor: u32,
    /// Noise variance each client adds, in integer units.
    pub per_client_variance: f64,
    /// The least noise variance in any released sum: floor × per-client, in integer units.
    pub central_variance: f64,
    /// The same, unscaled (`central_variance / scale²`): the accountant's μ.
    pub variance_unscaled: f64,
    /// Client sampling rate (amplification holds only against parties that
    /// do not choose the sample).
    pub sampling_rate: f64,
    /// ε after this round against the coordinator, which picks the sample:
    /// no amplification (sampling rate 1).
    pub epsilon_vs_coordinator: f64,
}

impl SkellamRelease {
    /// The CLI command that recomputes ε after `rounds` rounds from this
    /// row (with `amplified`, the sampling rate; without, 1).
    pub fn command(&self, rounds: u64, delta: f64, amplified: bool) -> String {
        format!(
            "tensorguard privacy epsilon --accountant skellam --l2-sensitivity {} --dimension {} \
             --variance {} --scale {} --rounding-beta 0 --sampling-rate {} --steps {rounds} --delta {delta}",
            self.clip,
            self.dimension,
            self.variance_unscaled,
            self.scale,
            if amplified { self.sampling_rate } else { 1.0 },
        )
    }
}

/// One round's entry in a job's privacy ledger, written before any noised
/// result of that round can leave the node that noised it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Round the entry pays for.
    pub round: u32,
    /// `central` or `local-sgd`.
    pub mechanism: String,
    /// What the round spends.
    pub spent: GaussianSteps,
    /// ε of the whole job once this round has run.
    pub epsilon_after: f64,
    /// δ of that ε.
    pub delta: Delta,
    /// Accountant that computed `epsilon_after`.
    pub accountant: AccountantKind,
    /// Distributed DP: the release this round made, from which its ε (with
    /// and without sampling amplification) is recomputed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<SkellamRelease>,
}
