//! `tensorguard privacy epsilon|calibrate`.

use serde_json::json;
use tg_privacy::{
    Delta, Epsilon, NoiseMultiplier, RdpAccountant, SamplingRate, SkellamParams, calibrate_noise,
    skellam_epsilon,
};

use crate::cli::{AccountantKind, PlanArgs, PrivacyCommand, SkellamArgs};
use crate::errors::{UserError, from_privacy, invalid};
use crate::output::Output;

struct Plan {
    q: SamplingRate,
    steps: u64,
    delta: Delta,
    accountant: AccountantKind,
}

fn plan(p: &PlanArgs) -> Result<Plan, UserError> {
    if p.steps == 0 {
        return Err(invalid(
            "--steps 0",
            "no steps spend no privacy, so there is nothing to account",
            "use --steps 1 or more",
        ));
    }
    Ok(Plan {
        q: SamplingRate::new(p.sampling_rate).map_err(from_privacy)?,
        steps: p.steps,
        delta: Delta::new(p.delta).map_err(from_privacy)?,
        accountant: p.accountant,
    })
}

/// (ε, optimal order if RDP) for a plan at σ.
fn epsilon(plan: &Plan, sigma: NoiseMultiplier) -> (f64, Option<f64>) {
    match plan.accountant {
        // Refused before any Gaussian question reaches here (see `gaussian_only`).
        AccountantKind::Skellam => (f64::INFINITY, None),
        AccountantKind::Rdp => {
            let mut acc = RdpAccountant::default();
            acc.compose(plan.q, sigma, plan.steps);
            let (e, order) = acc.epsilon(plan.delta);
            (e, Some(order))
        }
        AccountantKind::Pld => {
            let e = tg_privacy::pld::epsilon(
                &[(plan.q, sigma, plan.steps)],
                plan.delta,
                tg_privacy::pld::DEFAULT_INTERVAL,
            );
            (e, None)
        }
    }
}

fn name(a: AccountantKind) -> &'static str {
    match a {
        AccountantKind::Rdp => "rdp",
        AccountantKind::Pld => "pld",
        AccountantKind::Skellam => "skellam",
    }
}

fn usage(what: impl Into<String>, why: &str, fix: &str) -> UserError {
    invalid(what, why, fix)
}

/// ε of a Skellam release plan.
fn skellam(
    plan: &Plan,
    a: &SkellamArgs,
    noise_multiplier: Option<f64>,
    out: &Output,
) -> Result<(), UserError> {
    if noise_multiplier.is_some() {
        return Err(usage(
            "--noise-multiplier with --accountant skellam",
            "the Skellam mechanism is described by its variance and sensitivities",
            "give --variance, --l2-sensitivity and --l1-sensitivity or --dimension instead",
        ));
    }
    let need = |v: Option<f64>, flag: &str, example: &str| {
        v.ok_or_else(|| {
            usage(
                format!("--accountant skellam without {flag}"),
                "the Skellam bound depends on it",
                &format!("add {flag} {example}"),
            )
        })
    };
    let l2 = need(a.l2_sensitivity, "--l2-sensitivity", "1.0")?;
    let variance = need(a.variance, "--variance", "4.0")?;
    let mut params = match (a.l1_sensitivity, a.dimension) {
        (Some(l1), _) => SkellamParams::new(l1, l2, variance, a.scale),
        (None, Some(d)) => SkellamParams::for_dimension(l2, d, variance, a.scale),
        (None, None) => return Err(usage(
            "--accountant skellam without --l1-sensitivity or --dimension",
            "the Skellam bound needs the L1 sensitivity (or the dimension to bound it by Δ₂·√d)",
            "add --dimension D or --l1-sensitivity D1",
        )),
    }
    .map_err(from_privacy)?;
    if let Some(beta) = a.rounding_beta {
        let d = a.dimension.ok_or_else(|| {
            usage(
                "--rounding-beta without --dimension",
                "the rounding bound depends on the dimension",
                "add --dimension D",
            )
        })?;
        params = params.with_rounding(d, beta).map_err(from_privacy)?;
    }
    let (eps, order) = skellam_epsilon(&params, plan.q, plan.steps, plan.delta);
    if out.json {
        out.json_value(&json!({
            "epsilon": eps, "delta": plan.delta.get(), "accountant": "skellam", "optimal_order": order,
        }));
    } else {
        out.line(&format!(
            "ε = {eps:.6} at δ = {} (skellam accountant, optimal order {order}) for {} steps at q = {}",
            plan.delta.get(),
            plan.steps,
            plan.q.get()
        ));
    }
    Ok(())
}

pub fn run(cmd: PrivacyCommand, out: &Output) -> Result<(), UserError> {
    match cmd {
        PrivacyCommand::Epsilon {
            plan: p,
            noise_multiplier,
            skellam: sk,
        } => {
            let plan = plan(&p)?;
            if matches!(plan.accountant, AccountantKind::Skellam) {
                return skellam(&plan, &sk, noise_multiplier, out);
            }
            if sk.l2_sensitivity.is_some()
                || sk.variance.is_some()
                || sk.l1_sensitivity.is_some()
                || sk.dimension.is_some()
                || sk.rounding_beta.is_some()
            {
                return Err(usage(
                    "Skellam parameters with a Gaussian accountant",
                    "--l2-sensitivity, --l1-sensitivity, --dimension, --variance and --rounding-beta describe a Skellam release",
                    "add --accountant skellam, or give --noise-multiplier for rdp/pld",
                ));
            }
            let noise_multiplier = noise_multiplier.ok_or_else(|| {
                usage(
                    format!(
                        "--accountant {} without --noise-multiplier",
                        name(plan.accountant)
                    ),
                    "the Gaussian mechanism's privacy depends on its noise multiplier",
                    "add e.g. --noise-multiplier 1.1",
                )
            })?;
            let sigma = NoiseMultiplier::new(noise_multiplier).map_err(from_privacy)?;
            let (eps, order) = epsilon(&plan, sigma);
            if out.json {
                let mut v = json!({"epsilon": eps, "delta": plan.delta.get(), "accountant": name(plan.accountant)});
                if let Some(o) = order {
                    v["optimal_order"] = json!(o);
                }
                out.json_value(&v);
            } else {
                out.line(&format!(
                    "ε = {eps:.6} at δ = {} ({} accountant{}) for {} steps at q = {}, σ = {}",
                    plan.delta.get(),
                    name(plan.accountant),
                    order
                        .map(|o| format!(", optimal order {o}"))
                        .unwrap_or_default(),
                    plan.steps,
                    plan.q.get(),
                    sigma.get()
                ));
            }
        }
        PrivacyCommand::Calibrate {
            plan: p,
            target_epsilon,
        } => {
            let plan = plan(&p)?;
            if matches!(plan.accountant, AccountantKind::Skellam) {
                return Err(usage(
                    "privacy calibrate --accountant skellam",
                    "calibration finds a Gaussian noise multiplier",
                    "use --accountant rdp or pld; for Skellam, evaluate candidate variances with `privacy epsilon --accountant skellam`",
                ));
            }
            let target = Epsilon::new(target_epsilon).map_err(from_privacy)?;
            let sigma = calibrate_noise(target, |s| epsilon(&plan, s).0).map_err(from_privacy)?;
            let (achieved, _) = epsilon(&plan, sigma);
            if out.json {
                out.json_value(&json!({
                    "noise_multiplier": sigma.get(), "epsilon": achieved, "target_epsilon": target.get(),
                    "delta": plan.delta.get(), "accountant": name(plan.accountant),
                }));
            } else {
                out.line(&format!(
                    "σ = {:.6} keeps ε ≤ {} (achieves {achieved:.6}) at δ = {} over {} steps at q = {} ({} accountant)",
                    sigma.get(),
                    target.get(),
                    plan.delta.get(),
                    plan.steps,
                    plan.q.get(),
                    name(plan.accountant)
                ));
            }
        }
    }
    Ok(())
}
