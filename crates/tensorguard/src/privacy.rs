//! `tensorguard privacy epsilon|calibrate`.

use serde_json::json;
use tg_privacy::{calibrate_noise, Delta, Epsilon, NoiseMultiplier, RdpAccountant, SamplingRate};

use crate::cli::{AccountantKind, PlanArgs, PrivacyCommand};
use crate::errors::{from_privacy, invalid, CliError};
use crate::output::Output;

struct Plan {
    q: SamplingRate,
    steps: u64,
    delta: Delta,
    accountant: AccountantKind,
}

fn plan(p: &PlanArgs) -> Result<Plan, CliError> {
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
    }
}

pub fn run(cmd: PrivacyCommand, out: &Output) -> Result<(), CliError> {
    match cmd {
        PrivacyCommand::Epsilon {
            plan: p,
            noise_multiplier,
        } => {
            let plan = plan(&p)?;
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
