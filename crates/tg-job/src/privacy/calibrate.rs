//! Phase 2 of the privacy section: the spec for the data's facts, with σ
//! calibrated to the budget when asked (`auto`) and DP-SGD's rate derived
//! from the data when not given.

use tg_privacy::{ClipNorm, NoiseMultiplier, Quantile, SamplingRate, calibrate_noise};
use tg_types::privacy::{CentralDpSpec, ClipSpec, DpMode, DpSgdSpec, PrivacySpec};
use tg_types::spec::JobSpec;

use super::{
    ADAPTIVE_COUNT_NOISE_PER_CLIENT, ADAPTIVE_INITIAL_CLIP, ADAPTIVE_LEARNING_RATE,
    ADAPTIVE_TARGET_QUANTILE, Choice, DEFAULT_MAX_GRAD_NORM, Mode, key,
};
use crate::{Facts, Result, from_privacy, invalid};

impl Choice {
    /// The privacy spec for `spec` and the data's `facts`, σ calibrated
    /// when asked; and whether it was.
    pub(crate) fn calibrate(&self, spec: &JobSpec, facts: &Facts) -> Result<(PrivacySpec, bool)> {
        let q_clients =
            || SamplingRate::new(spec.fraction).map_err(|e| from_privacy("fraction", e));
        let population = self.population.unwrap_or(spec.clients);
        if self.mode == Mode::Distributed {
            let clip = self.clip.ok_or_else(|| {
                invalid(
                    "distributed DP without a clip",
                    "each client's vector must be clipped before its noise share is added",
                    "give privacy.clip, e.g. 1.0",
                )
            })?;
            let d = crate::distributed::Inputs {
                spec,
                facts,
                clip,
                q: q_clients()?,
                population,
                min_survivors: self.min_clients,
                target: self.target,
                delta: self.delta,
                budget_against: self.budget_against,
            };
            return Ok((crate::distributed::calibrate(&d)?, true));
        }
        let placeholder = NoiseMultiplier::new(1.0).map_err(|e| from_privacy("noise", e))?;
        let mode = match self.mode {
            Mode::Central => {
                let q = q_clients()?;
                let expected = q.get() * f64::from(population);
                let clip = match self.clip {
                    Some(norm) => ClipSpec::Fixed { norm },
                    None => ClipSpec::Adaptive {
                        initial: ClipNorm::new(ADAPTIVE_INITIAL_CLIP)
                            .map_err(|e| from_privacy(&key("clip"), e))?,
                        target_quantile: Quantile::new(ADAPTIVE_TARGET_QUANTILE)
                            .map_err(|e| from_privacy(&key("clip"), e))?,
                        learning_rate: ADAPTIVE_LEARNING_RATE,
                        count_noise_std: expected * ADAPTIVE_COUNT_NOISE_PER_CLIENT,
                    },
                };
                DpMode::Central(CentralDpSpec {
                    noise_multiplier: placeholder,
                    clip,
                    client_sampling_rate: q,
                    population,
                })
            }
            _ => {
                let (sampling_rate, steps_per_round) = self.dp_sgd_rate(spec, facts)?;
                DpMode::LocalSgd(DpSgdSpec {
                    noise_multiplier: placeholder,
                    max_grad_norm: self.clip.unwrap_or(placeholder_clip()?),
                    sampling_rate,
                    steps_per_round,
                })
            }
        };
        let mut privacy = PrivacySpec {
            mode,
            target_epsilon: self.target,
            delta: self.delta,
            accountant: self.accountant,
            budget_against: self.budget_against,
        };
        privacy
            .per_round()
            .map_err(|e| from_privacy(&key("sampling_rate"), e))?;
        let rounds = u64::from(spec.rounds);
        let sigma = match self.sigma {
            Some(s) => s,
            None => {
                let mut failure = None;
                let sigma = calibrate_noise(self.target, |s| {
                    match with_sigma(privacy, s).epsilon_after(rounds) {
                        Ok(e) => e,
                        Err(e) => {
                            failure = Some(e);
                            f64::INFINITY
                        }
                    }
                });
                if let Some(e) = failure {
                    return Err(from_privacy(&key("noise_multiplier"), e));
                }
                sigma.map_err(|e| from_privacy(&key("target_epsilon"), e))?
            }
        };
        privacy = with_sigma(privacy, sigma);
        if let DpMode::Central(CentralDpSpec {
            clip: ClipSpec::Adaptive {
                count_noise_std, ..
            },
            client_sampling_rate,
            population,
            ..
        }) = privacy.mode
            && 2.0 * count_noise_std <= sigma.get()
        {
            // The clip count's noise σ_b = qN/20 must exceed z/2 (Andrew et al.).
            let needed = (10.0 * sigma.get()).ceil();
            return Err(invalid(
                format!(
                    "adaptive clipping with {:.1} expected clients per round",
                    client_sampling_rate.get() * f64::from(population)
                ),
                format!(
                    "adaptive clipping releases a noisy count whose noise (qN/20) must exceed z/2 = {:.3}, \
                     which needs at least {needed} expected clients per round",
                    sigma.get() / 2.0
                ),
                "use a fixed clip (e.g. clip = 1.0), or a larger population or fraction",
            )
            .at(&key("clip")));
        }
        Ok((privacy, self.sigma.is_none()))
    }

    /// DP-SGD's Poisson rate and steps per round: as given, or one rate
    /// for all clients from the data (the mean client's batch is the job's
    /// batch size, and an epoch is 1/q steps in expectation).
    fn dp_sgd_rate(&self, spec: &JobSpec, facts: &Facts) -> Result<(SamplingRate, u32)> {
        let q = match (self.sampling_rate, &facts.client_sizes) {
            (Some(q), _) => q,
            (None, Some(sizes)) => {
                let mean = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
                let q = (f64::from(spec.train.batch_size) / mean.max(1.0)).min(1.0);
                SamplingRate::new(q).map_err(|e| from_privacy(&key("sampling_rate"), e))?
            }
            (None, None) => {
                return Err(invalid(
                    "privacy.mode = \"local-sgd\" without privacy.sampling_rate",
                    "a fleet's coordinator does not know how many examples each agent holds, so the rate cannot be derived",
                    "add e.g. sampling_rate = 0.05 (the batch size ÷ the examples per agent)",
                )
                .at(&key("sampling_rate")));
            }
        };
        let steps = self.steps_per_round.unwrap_or_else(|| {
            ((f64::from(spec.train.local_epochs) / q.get()).round() as u32).max(1)
        });
        Ok((q, steps))
    }
}

fn placeholder_clip() -> Result<ClipNorm> {
    ClipNorm::new(DEFAULT_MAX_GRAD_NORM).map_err(|e| from_privacy(&key("clip"), e))
}

fn with_sigma(mut p: PrivacySpec, sigma: NoiseMultiplier) -> PrivacySpec {
    match &mut p.mode {
        DpMode::Central(c) => c.noise_multiplier = sigma,
        DpMode::LocalSgd(s) => s.noise_multiplier = sigma,
        _ => {}
    }
    p
}
