//! User-level DP-FedAvg: the coordinator clips, sums and noises.
//!
//! Design decision: differential privacy is a *wrapper* around a server
//! optimizer, not a strategy of its own. [`CentralDp`] owns the private part —
//! Poisson client sampling from a CSPRNG, per-client L2 clipping, Gaussian
//! noise on the sum, division by the *expected* number of clients (a fixed
//! denominator, so one client's influence is bounded by C / (qN)) — and hands
//! the noised mean to the wrapped FedAvg or FedAdam as if it were a single
//! client's update. Everything the inner strategy sees is post-processing.
//!
//! With adaptive clipping (Andrew et al. 2021) the count of unclipped clients
//! is released too, with its own noise σ_b; the update noise multiplier is
//! raised to z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) so that the two releases together
//! are exactly one Gaussian mechanism with multiplier z — the z the ledger
//! accounts for.

use rand::RngCore;
use tg_privacy::{LatticeGaussian, NoiseRng};
use tg_types::privacy::{CentralDpSpec, ClipSpec};
use tg_types::{AgentId, Parameters};

use crate::{ClientUpdate, Fold, FoldRule, Result, Strategy, StrategyError, TrainPlan, Weighting};

/// DP-FedAvg around a server optimizer.
pub struct CentralDp {
    inner: Box<dyn Strategy>,
    spec: CentralDpSpec,
    clip_norm: f64,
    update_noise_multiplier: f64,
    noise: NoiseRng,
}

impl std::fmt::Debug for CentralDp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CentralDp")
            .field("inner", &self.inner.name())
            .field("spec", &self.spec)
            .field("clip_norm", &self.clip_norm)
            .finish_non_exhaustive()
    }
}

impl CentralDp {
    /// Wraps `inner` (which must not need per-client side information).
    pub fn new(inner: Box<dyn Strategy>, spec: CentralDpSpec, noise: NoiseRng) -> Result<Self> {
        if spec.population == 0 {
            return Err(StrategyError::Config(
                "central DP needs a population of at least one client".into(),
            ));
        }
        let z = spec.noise_multiplier.get();
        let (clip_norm, update_noise_multiplier) = match spec.clip {
            ClipSpec::Fixed { norm } => (norm.get(), z),
            ClipSpec::Adaptive {
                initial,
                learning_rate,
                count_noise_std,
                ..
            } => {
                if !(learning_rate > 0.0 && learning_rate.is_finite()) {
                    return Err(StrategyError::Config(format!(
                        "adaptive clipping learning rate must be positive, got {learning_rate}"
                    )));
                }
                let two_sb = 2.0 * count_noise_std;
                if !(count_noise_std.is_finite() && two_sb > z) {
                    return Err(StrategyError::Config(format!(
                        "adaptive clipping needs count noise σ_b > z/2 = {} (got σ_b = {count_noise_std}); \
                         raise σ_b or the expected clients per round",
                        z / 2.0
                    )));
                }
                (initial.get(), (z.powi(-2) - two_sb.powi(-2)).powf(-0.5))
            }
            other => {
                return Err(StrategyError::Config(format!(
                    "clipping {other:?} is not supported by this build"
                )));
            }
        };
        Ok(Self {
            inner,
            spec,
            clip_norm,
            update_noise_multiplier,
            noise,
        })
    }

    /// Expected clients per round, qN: the fixed denominator.
    pub fn expected_clients(&self) -> f64 {
        self.spec.client_sampling_rate.get() * f64::from(self.spec.population)
    }

    /// The noise multiplier applied to the update sum (≥ the accounted z).
    pub fn update_noise_multiplier(&self) -> f64 {
        self.update_noise_multiplier
    }

    /// The clipping norm the next round will use.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    fn noise_err(e: tg_privacy::PrivacyError) -> StrategyError {
        StrategyError::Config(format!("DP noise: {e}"))
    }
}

impl Strategy for CentralDp {
    fn name(&self) -> &'static str {
        "dp-fedavg"
    }

    fn configure_train(
        &mut self,
        round: u32,
        global: &Parameters,
        available: &[AgentId],
        rng: &mut dyn RngCore,
    ) -> Result<TrainPlan> {
        // Poisson sampling from the CSPRNG (the seeded job RNG is predictable).
        crate::poisson::poisson_plan(
            self.inner.as_mut(),
            round,
            global,
            available,
            self.spec.client_sampling_rate.get(),
            &mut self.noise,
            rng,
        )
    }

    fn fold_rule(&self) -> FoldRule {
        FoldRule {
            weighting: Weighting::Uniform,
            clip: Some(self.clip_norm),
            control: false,
            keep: false,
        }
    }

    fn expert_steps(&self) -> Vec<tg_types::record::ExpertStep> {
        self.inner.expert_steps()
    }

    fn takes_sparse_updates(&self) -> bool {
        self.inner.takes_sparse_updates()
    }

    fn apply(&mut self, round: u32, global: &Parameters, fold: Fold) -> Result<Parameters> {
        let first = fold
            .agents()
            .next()
            .cloned()
            .ok_or(StrategyError::NoResults)?;
        let c = self.clip_norm;
        let unclipped = fold.unclipped();
        let mut sum = fold.sum_f64();
        let lattice = LatticeGaussian::calibrated(self.update_noise_multiplier, c, sum.len())
            .map_err(Self::noise_err)?;
        self.noise
            .add_lattice_gaussian(&mut sum, &lattice)
            .map_err(Self::noise_err)?;
        let denominator = self.expected_clients();
        let lanes: Vec<f64> = sum.iter().map(|s| s / denominator).collect();
        drop(sum);
        let mean = fold.params_from(&lanes)?;

        let as_one = ClientUpdate {
            agent: first,
            update: mean,
            num_examples: 1,
            control_delta: None,
        };
        // The model first: a failure leaves the clip untouched.
        let next = self
            .inner
            .aggregate_train(round, global, std::slice::from_ref(&as_one))?;
        if let ClipSpec::Adaptive {
            target_quantile,
            learning_rate,
            count_noise_std,
            ..
        } = self.spec.clip
        {
            // The count is an integer: lattice noise keeps the release free of
            // a low-bit channel (a float sample added to it would not be).
            let mut count = [unclipped as f64];
            let lattice =
                LatticeGaussian::for_integers(count_noise_std).map_err(Self::noise_err)?;
            self.noise
                .add_lattice_gaussian(&mut count, &lattice)
                .map_err(Self::noise_err)?;
            let noised = count[0] / denominator;
            self.clip_norm = c * (-learning_rate * (noised - target_quantile.get())).exp();
        }

        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FedAvg, Sampler};
    use tg_privacy::{ClipNorm, NoiseMultiplier, Quantile, SamplingRate};
    use tg_types::NamedTensor;

    fn params(v: Vec<f32>) -> Parameters {
        Parameters::new(vec![NamedTensor {
            name: "w".into(),
            shape: vec![v.len()],
            data: v,
        }])
        .unwrap()
    }

    fn spec(z: f64, clip: ClipSpec, q: f64, n: u32) -> CentralDpSpec {
        CentralDpSpec {
            noise_multiplier: NoiseMultiplier::new(z).unwrap(),
            clip,
            client_sampling_rate: SamplingRate::new(q).unwrap(),
            population: n,
        }
    }

    fn dp(spec: CentralDpSpec, seed: u64) -> CentralDp {
        let inner = Box::new(FedAvg::new(Sampler::new(1.0, 1).unwrap(), 1.0));
        CentralDp::new(inner, spec, NoiseRng::insecure_seeded_for_tests(seed)).unwrap()
    }

    fn update(i: usize, v: Vec<f32>) -> ClientUpdate {
        ClientUpdate {
            agent: AgentId::numbered(i),
            update: params(v),
            num_examples: 7,
            control_delta: None,
        }
    }

    #[test]
    fn clips_each_update_and_divides_by_expected_clients() {
        let fixed = ClipSpec::Fixed {
            norm: ClipNorm::new(1.0).unwrap(),
        };
        // Tiny noise so the arithmetic is visible.
        let mut s = dp(spec(1e-9, fixed, 0.5, 4), 1);
        let global = params(vec![0.0; 2]);
        let next = s
            .aggregate_train(
                1,
                &global,
                &[update(0, vec![3.0, 4.0]), update(1, vec![0.3, 0.4])],
            )
            .unwrap();
        // (0.6, 0.8) + (0.3, 0.4) over qN = 2.
        let got: Vec<f32> = next.values().collect();
        assert!(
            (got[0] - 0.45).abs() < 1e-6 && (got[1] - 0.6).abs() < 1e-6,
            "{got:?}"
        );
    }

    #[test]
    fn noise_has_the_promised_standard_deviation() {
        let fixed = ClipSpec::Fixed {
            norm: ClipNorm::new(2.0).unwrap(),
        };
        let mut s = dp(spec(1.5, fixed, 1.0, 1), 2);
        let d = 20_000;
        let global = params(vec![0.0; d]);
        let next = s
            .aggregate_train(1, &global, &[update(0, vec![0.0; d])])
            .unwrap();
        let var = next.values().map(|v| f64::from(v).powi(2)).sum::<f64>() / d as f64;
        // std = z·C / (qN) = 3; the sample variance is within a few % for 20k draws.
        assert!((var.sqrt() - 3.0).abs() < 0.1, "std {}", var.sqrt());
    }

    #[test]
    fn poisson_sampling_rate_is_respected() {
        let fixed = ClipSpec::Fixed {
            norm: ClipNorm::new(1.0).unwrap(),
        };
        let mut s = dp(spec(1.0, fixed, 0.2, 1000), 3);
        let agents: Vec<AgentId> = (0..1000).map(AgentId::numbered).collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut total = 0;
        for r in 0..20 {
            total += s
                .configure_train(r, &params(vec![0.0]), &agents, &mut rng)
                .unwrap()
                .selected
                .len();
        }
        // Mean 200 per round; 20 rounds → 4000 ± ~3σ (σ ≈ 57).
        assert!((3800..4200).contains(&total), "{total}");
    }

    #[test]
    fn adaptive_clip_moves_toward_the_quantile() {
        let adaptive = ClipSpec::Adaptive {
            initial: ClipNorm::new(0.1).unwrap(),
            target_quantile: Quantile::new(0.5).unwrap(),
            learning_rate: 0.2,
            count_noise_std: 1.0,
        };
        let mut s = dp(spec(1.0, adaptive, 1.0, 20), 4);
        assert!(s.update_noise_multiplier() > 1.0);
        let global = params(vec![0.0; 3]);
        let ups: Vec<_> = (0..20).map(|i| update(i, vec![1.0, 0.0, 0.0])).collect();
        for r in 1..=20 {
            s.aggregate_train(r, &global, &ups).unwrap();
        }
        // Every norm is 1: C grows from 0.1 toward 1.
        assert!(s.clip_norm() > 0.5, "{}", s.clip_norm());
    }

    #[test]
    fn rejects_count_noise_too_small_for_z() {
        let adaptive = ClipSpec::Adaptive {
            initial: ClipNorm::new(0.1).unwrap(),
            target_quantile: Quantile::new(0.5).unwrap(),
            learning_rate: 0.2,
            count_noise_std: 0.4,
        };
        let inner = Box::new(FedAvg::new(Sampler::new(1.0, 1).unwrap(), 1.0));
        let err = CentralDp::new(
            inner,
            spec(1.0, adaptive, 1.0, 20),
            NoiseRng::insecure_seeded_for_tests(0),
        )
        .unwrap_err();
        assert!(err.to_string().contains("σ_b"), "{err}");
    }

    use rand::SeedableRng;
}
