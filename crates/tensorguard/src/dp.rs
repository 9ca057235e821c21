//! `tensorguard demo --dp …`: turning flags into a validated privacy spec.
//!
//! Two phases, because local DP-SGD's sampling rate depends on how much data
//! the smallest client holds, which is known only after partitioning:
//! [`shape_federation`] adjusts the federation (population, quorum) before
//! the data is split; [`privacy_spec`] builds and calibrates the budget after.

use tg_inproc::Prepared;
use tg_privacy::{
    AccountantKind, ClipNorm, Delta, Epsilon, NoiseMultiplier, Quantile, SamplingRate,
    calibrate_noise,
};
use tg_types::privacy::{CentralDpSpec, ClipSpec, DpMode, DpSgdSpec, PrivacySpec};
use tg_types::spec::{JobSpec, ModelKind, StrategyKind};

use crate::cli::{self, DemoArgs, DpModeArg};
use crate::errors::{CliError, from_privacy, invalid};

/// Andrew et al. (2021): initial C, target quantile γ, step η, and σ_b = m/20.
const ADAPTIVE_INITIAL_CLIP: f64 = 0.1;
const ADAPTIVE_TARGET_QUANTILE: f64 = 0.5;
const ADAPTIVE_LEARNING_RATE: f64 = 0.2;
const ADAPTIVE_COUNT_NOISE_PER_CLIENT: f64 = 1.0 / 20.0;
/// Default per-example clipping norm of DP-SGD (Opacus' customary 1.0).
const DEFAULT_MAX_GRAD_NORM: f64 = 1.0;

pub fn accountant(a: cli::AccountantKind) -> Result<AccountantKind, CliError> {
    match a {
        cli::AccountantKind::Rdp => Ok(AccountantKind::Rdp),
        cli::AccountantKind::Pld => Ok(AccountantKind::Pld),
        cli::AccountantKind::Skellam => Err(invalid(
            "--accountant skellam with --dp",
            "central DP and DP-SGD add Gaussian noise; Skellam accounts integer noise under secure aggregation",
            "use --accountant pld (tightest) or rdp",
        )),
    }
}

/// Phase 1: with `--dp central`, the population becomes the clients and the
/// default quorum drops to 1 (Poisson sampling may pick few clients).
pub fn shape_federation(a: &DemoArgs, spec: &mut JobSpec) -> Result<(), CliError> {
    let dp = &a.dp;
    let Some(mode) = dp.dp else {
        for (given, flag) in [
            (dp.target_epsilon.is_some(), "--target-epsilon"),
            (dp.population.is_some(), "--population"),
            (dp.clip.is_some(), "--clip"),
            (dp.noise_multiplier != "auto", "--noise-multiplier"),
        ] {
            if given {
                return Err(invalid(
                    format!("{flag} without --dp"),
                    "it only has a meaning for a differentially private run",
                    format!("add --dp central or --dp local-sgd, or drop {flag}"),
                ));
            }
        }
        return Ok(());
    };
    match mode {
        DpModeArg::Central | DpModeArg::Distributed => {
            if let Some(n) = dp.population {
                if n == 0 {
                    return Err(invalid(
                        "--population 0",
                        "there is nobody to protect or to train",
                        "use the number of users, e.g. --population 500",
                    ));
                }
                if a.clients.is_some_and(|c| c != n) {
                    return Err(invalid(
                        format!("--population {n} with --clients {}", a.clients.unwrap_or(n)),
                        "in the demo every user of the population is one simulated client",
                        "give only --population",
                    ));
                }
                spec.clients = n;
            }
            if a.min_clients.is_none() {
                spec.min_clients = 1;
            }
            if spec.strategy.kind == StrategyKind::Scaffold {
                return Err(invalid(
                    "--strategy scaffold with --dp central or distributed",
                    "SCAFFOLD's control variates are per-client and would be released without noise",
                    "use --strategy fedavg, fedprox or fedadam",
                ));
            }
        }
        DpModeArg::LocalSgd => {
            if dp.population.is_some() {
                return Err(invalid(
                    "--population with --dp local-sgd",
                    "sample-level DP protects each client's examples; there is no user sampling",
                    "drop --population, or use --dp central",
                ));
            }
            if spec.model != ModelKind::Mlp {
                return Err(invalid(
                    format!("--model {} with --dp local-sgd", spec.model),
                    "DP-SGD here computes exact per-example gradients for linear layers only",
                    "use --model mlp",
                ));
            }
        }
    }
    Ok(())
}

/// Phase 2: the privacy spec for the partitioned federation, with σ
/// calibrated when asked (`auto`) so that every planned round fits.
pub fn privacy_spec(a: &DemoArgs, prepared: &Prepared) -> Result<Option<PrivacySpec>, CliError> {
    let dp = &a.dp;
    let Some(mode) = dp.dp else { return Ok(None) };
    let spec = prepared.spec();
    let target_epsilon = dp.target_epsilon.ok_or_else(|| {
        invalid(
            "--dp without --target-epsilon",
            "a private run needs a budget to stay within",
            "add e.g. --target-epsilon 8",
        )
    })?;
    let target_epsilon = Epsilon::new(target_epsilon).map_err(from_privacy)?;
    let delta = Delta::new(dp.delta).map_err(from_privacy)?;
    let accountant = accountant(dp.accountant)?;
    let sizes = prepared.client_sizes();
    let placeholder = NoiseMultiplier::new(1.0).map_err(from_privacy)?;

    if matches!(dp.budget_against, cli::BudgetAgainstArg::Coordinator)
        && !matches!(mode, DpModeArg::Distributed)
    {
        return Err(invalid(
            "--budget-against coordinator without --dp distributed",
            "central DP trusts the coordinator to add the noise (no protection against it), and DP-SGD agents sample their own examples (amplification already holds against it)",
            "use --dp distributed, or leave --budget-against at its default",
        ));
    }
    let mode = match mode {
        DpModeArg::Distributed => {
            return crate::dp_distributed::spec(a, prepared, target_epsilon, delta).map(Some);
        }
        DpModeArg::Central => {
            let q = SamplingRate::new(spec.fraction).map_err(from_privacy)?;
            let expected = q.get() * f64::from(spec.clients);
            let clip = match dp.clip.as_deref() {
                None | Some("adaptive") => ClipSpec::Adaptive {
                    initial: ClipNorm::new(ADAPTIVE_INITIAL_CLIP).map_err(from_privacy)?,
                    target_quantile: Quantile::new(ADAPTIVE_TARGET_QUANTILE)
                        .map_err(from_privacy)?,
                    learning_rate: ADAPTIVE_LEARNING_RATE,
                    count_noise_std: expected * ADAPTIVE_COUNT_NOISE_PER_CLIENT,
                },
                Some(c) => ClipSpec::Fixed {
                    norm: clip_norm(c)?,
                },
            };
            DpMode::Central(CentralDpSpec {
                noise_multiplier: placeholder,
                clip,
                client_sampling_rate: q,
                population: spec.clients,
            })
        }
        DpModeArg::LocalSgd => {
            let max_grad_norm = match dp.clip.as_deref() {
                None => ClipNorm::new(DEFAULT_MAX_GRAD_NORM).map_err(from_privacy)?,
                Some("adaptive") => {
                    return Err(invalid(
                        "--clip adaptive with --dp local-sgd",
                        "adaptive clipping is implemented for client updates (central DP)",
                        "give a per-example norm, e.g. --clip 1.0",
                    ));
                }
                Some(c) => clip_norm(c)?,
            };
            // One rate for all: the mean client's batch is --batch-size, and
            // an epoch is 1/q steps in expectation.
            let mean = sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64;
            let q = (f64::from(spec.train.batch_size) / mean.max(1.0)).min(1.0);
            let sampling_rate = SamplingRate::new(q).map_err(from_privacy)?;
            let steps_per_round = ((f64::from(spec.train.local_epochs) / q).round() as u32).max(1);
            DpMode::LocalSgd(DpSgdSpec {
                noise_multiplier: placeholder,
                max_grad_norm,
                sampling_rate,
                steps_per_round,
            })
        }
    };
    let mut privacy = PrivacySpec {
        mode,
        target_epsilon,
        delta,
        accountant,
        budget_against: Default::default(),
    };
    let rounds = u64::from(spec.rounds);
    let epsilon_at = |p: &PrivacySpec| -> Result<f64, CliError> {
        p.epsilon_after(rounds).map_err(from_privacy)
    };
    let sigma = match dp.noise_multiplier.as_str() {
        "auto" => {
            let mut failure = None;
            let sigma = calibrate_noise(target_epsilon, |s| {
                match epsilon_at(&with_sigma(privacy, s)) {
                    Ok(e) => e,
                    Err(e) => {
                        failure = Some(e);
                        f64::INFINITY
                    }
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            sigma.map_err(from_privacy)?
        }
        s => {
            let v: f64 = s.parse().map_err(|_| {
                invalid(
                    format!("--noise-multiplier {s}"),
                    "it is neither a number nor `auto`",
                    "use e.g. --noise-multiplier 1.1, or auto to calibrate to the budget",
                )
            })?;
            NoiseMultiplier::new(v).map_err(from_privacy)?
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
    {
        // The clip count's noise σ_b = qN/20 must exceed z/2 (Andrew et al.).
        if 2.0 * count_noise_std <= sigma.get() {
            let needed = (10.0 * sigma.get()).ceil();
            return Err(invalid(
                format!(
                    "--clip adaptive with {:.1} expected clients per round",
                    client_sampling_rate.get() * f64::from(population)
                ),
                format!(
                    "adaptive clipping releases a noisy count whose noise (qN/20) must exceed z/2 = {:.3}, \
                     which needs at least {needed} expected clients per round",
                    sigma.get() / 2.0
                ),
                "use a fixed clip (e.g. --clip 1.0), or a larger --population or --fraction",
            ));
        }
    }
    Ok(Some(privacy))
}

fn with_sigma(mut p: PrivacySpec, sigma: NoiseMultiplier) -> PrivacySpec {
    match &mut p.mode {
        DpMode::Central(c) => c.noise_multiplier = sigma,
        DpMode::LocalSgd(s) => s.noise_multiplier = sigma,
        _ => {}
    }
    p
}

fn clip_norm(s: &str) -> Result<ClipNorm, CliError> {
    let v: f64 = s.parse().map_err(|_| {
        invalid(
            format!("--clip {s}"),
            "it is neither a number nor `adaptive`",
            "use e.g. --clip 1.0",
        )
    })?;
    ClipNorm::new(v).map_err(|_| {
        invalid(
            format!("--clip {s}"),
            "a clipping norm must be a positive, finite number",
            "use e.g. --clip 1.0",
        )
    })
}
