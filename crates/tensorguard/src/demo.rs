//! `tensorguard demo`: a real federation in this process, on a real dataset.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tg_inproc::Prepared;
use tg_store::Store;
use tg_types::JobId;
use tg_types::privacy::{ClipSpec, DpMode, PrivacySpec};
use tg_types::record::{JobStatus, RoundRecord, RoundStatus};

use crate::cli::DemoArgs;
use crate::errors::{UserError, from_inproc, from_store};
use crate::output::Output;

/// In process no agent hangs on a network, so a generous deadline only guards
/// against bugs; it is a stage deadline in the network federation.
const ROUND_DEADLINE: Duration = Duration::from_secs(600);

pub fn run(
    job_plan: &tg_job::Job,
    args: &DemoArgs,
    data_dir: &std::path::Path,
    out: &Output,
) -> Result<serde_json::Value, UserError> {
    let started = Instant::now();
    let baseline = !args.no_baseline;
    let mut store = Store::open(data_dir).map_err(|e| from_store(e, data_dir))?;
    let mut prepared =
        Prepared::new(job_plan.spec().clone()).map_err(|e| from_inproc(e, data_dir))?;
    // The job's numbers (the noise, the encoding) come from the plan, as on a fleet.
    let plan = job_plan
        .plan(&tg_job::Facts {
            num_parameters: prepared.num_parameters(),
            train_examples: prepared.sizes().0,
            client_sizes: Some(prepared.client_sizes()),
        })
        .map_err(crate::errors::from_job)?;
    prepared
        .set_plan(&plan)
        .map_err(|e| from_inproc(e, data_dir))?;
    let simulation = plan.simulation_label();
    if let Some(label) = &simulation {
        out.note(&out.red(label));
    }
    let attack = attack(args, &mut prepared, data_dir)?;
    if let Some(a) = &attack {
        out.note(&out.red(&a.label));
    }
    let spec = prepared.spec().clone();
    let job = new_job_id()?;
    let (n_train, n_test) = prepared.sizes();

    if !out.json {
        out.line(&format!(
            "{} run {job}: {} clients, {} rounds, {} on {} ({} train / {} held-out), {} partition, {} model ({} parameters)",
            out.bold("TensorGuard demo"),
            spec.clients,
            spec.rounds,
            spec.strategy.kind,
            spec.dataset,
            n_train,
            n_test,
            spec.partition,
            spec.model,
            prepared.num_parameters(),
        ));
        if let Some(p) = &spec.privacy {
            out.line(&privacy_line(p, spec.clients, plan.calibrated));
        }
        if spec.dropout > 0.0 {
            out.line(&format!(
                "fault injection: each selected client drops out of a round with probability {}",
                spec.dropout
            ));
        }
    }

    let bar = progress_bar(out, spec.rounds);
    let runtime = crate::errors::runtime()?;
    let rounds = spec.rounds;
    let outcome =
        runtime.block_on(
            prepared.run(job, &mut store, ROUND_DEADLINE, |r: &RoundRecord| {
                let line = round_line(out, r, rounds);
                match &bar {
                    Some(b) => {
                        b.println(line);
                        b.inc(1);
                    }
                    None if !out.json => out.line(&line),
                    None => {}
                }
            }),
        );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let finished = match outcome {
        Ok(f) => f,
        Err(e) => {
            let err = from_inproc(e, data_dir);
            let _ = store.finish_job(job, JobStatus::Failed, Some(&err.to_string()), &json!({}));
            return Err(err);
        }
    };

    let centralized = if baseline {
        if !out.json {
            out.line("training the centralized yardstick (same model, pooled data, same epochs)…");
        }
        Some(
            prepared
                .centralized_baseline()
                .map_err(|e| from_inproc(e, data_dir))?,
        )
    } else {
        None
    };

    let outcome = &finished.outcome;
    let committed = finished.summary.rounds_committed;
    let final_eval = outcome.final_evaluation;
    let rounds_to_90 = outcome
        .history
        .iter()
        .find(|r| r.accuracy.is_some_and(|a| a >= 0.9))
        .map(|r| r.round);
    let stop_reason = outcome.budget_exhausted.clone();
    // The demo's own keys, after the summary every runner records.
    let mut extra = finished.run_json(&spec);
    for (k, v) in [
        ("dataset", json!(spec.dataset.to_string())),
        ("partition", json!(spec.partition.to_string())),
        ("model", json!(spec.model.to_string())),
        ("num_parameters", json!(prepared.num_parameters())),
        ("dropout_injection", json!(spec.dropout)),
        ("rounds_to_90", json!(rounds_to_90)),
        (
            "centralized_accuracy",
            json!(centralized.map(|e| e.accuracy)),
        ),
        ("centralized_loss", json!(centralized.map(|e| e.loss))),
        ("data_dir", json!(data_dir.display().to_string())),
        ("elapsed_s", json!(started.elapsed().as_secs_f64())),
    ] {
        extra[k] = v;
    }
    if let Some(a) = &attack {
        let backdoor = (a.spec.kind == tg_inproc::attack::AttackKind::Backdoor)
            .then(|| prepared.backdoor_success(&outcome.model))
            .transpose()
            .map_err(|e| from_inproc(e, data_dir))?;
        extra["attack"] = json!({
            "simulated": true,
            "label": a.label,
            "kind": a.spec.kind.to_string(),
            "fraction": a.spec.fraction,
            "attackers": a.who.iter().map(|&i| tg_types::AgentId::numbered(i).to_string()).collect::<Vec<_>>(),
            "backdoor_target": (a.spec.kind == tg_inproc::attack::AttackKind::Backdoor)
                .then_some(tg_inproc::attack::BACKDOOR_TARGET),
            "backdoor_success": backdoor,
        });
        extra["aggregator"] = json!(
            spec.robust
                .map_or("fedavg".to_owned(), |r| r.kind.to_string())
        );
        extra["byzantine"] = json!(spec.robust.map_or(0, |r| r.f));
    }
    let summary = finished
        .record(&store, Some(extra))
        .map_err(|e| from_inproc(e.into(), data_dir))?;

    if !out.json {
        let pct = |v: Option<f64>| v.map_or("n/a".to_owned(), |a| format!("{:.1}%", a * 100.0));
        out.line(&format!(
            "{} {} of {} rounds committed in {:.1}s. Final held-out accuracy {} (centralized yardstick {}).",
            out.green("done:"),
            committed,
            spec.rounds,
            started.elapsed().as_secs_f64(),
            out.bold(&pct(final_eval.map(|e| e.accuracy))),
            pct(centralized.map(|e| e.accuracy)),
        ));
        if let Some(a) = &attack {
            out.line(&out.red(&a.label));
        }
        if let (Some(p), Some(e)) = (&spec.privacy, outcome.epsilon) {
            out.line(&format!(
                "privacy spent: ε = {e:.4} of {} at δ = {} ({} accountant, ledger in the run's store)",
                p.target_epsilon.get(),
                p.delta.get(),
                p.accountant
            ));
            if let Some(vs) = summary["epsilon_vs_coordinator"].as_f64() {
                out.line(&format!(
                    "  the budget stops on {}; against the coordinator, which picks the sample: ε = {vs:.4}",
                    p.budget_against.describe()
                ));
            }
        }
        if let Some(reason) = &stop_reason {
            out.line(&format!("{} {reason}", out.red("stopped:")));
        }
        out.line(&format!(
            "inspect it with: tensorguard runs show {}",
            &job.to_string()[..12]
        ));
    }
    Ok(summary)
}

/// A simulated attack on this demo, as the flags ask.
struct Attack {
    spec: tg_inproc::attack::AttackSpec,
    who: Vec<usize>,
    label: String,
}

fn attack(
    args: &DemoArgs,
    prepared: &mut Prepared,
    data_dir: &std::path::Path,
) -> Result<Option<Attack>, UserError> {
    let (Some(kind), Some(fraction)) = (&args.robust.attack, args.robust.attackers) else {
        return Ok(None);
    };
    let kind = kind
        .parse::<tg_inproc::attack::AttackKind>()
        .map_err(|why| {
            crate::errors::invalid(
                format!("--attack {kind}"),
                why,
                "pick one of the listed attacks",
            )
        })?;
    let spec = tg_inproc::attack::AttackSpec { kind, fraction };
    spec.check().map_err(|why| {
        crate::errors::invalid(format!("--attackers {fraction}"), why, "use e.g. 0.2")
    })?;
    let who = prepared
        .set_attack(spec)
        .map_err(|e| from_inproc(e, data_dir))?;
    let label = format!(
        "SIMULATED ATTACK: {} of {} clients ({}) run the {kind} attack; this run measures a defence, it is not a federation",
        who.len(),
        prepared.spec().clients,
        who.iter()
            .map(|&i| tg_types::AgentId::numbered(i).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(Attack { spec, who, label }))
}

fn new_job_id() -> Result<JobId, UserError> {
    let mut b = [0u8; 16];
    crate::errors::os_random(&mut b)?;
    Ok(JobId::from_bytes(b))
}

fn progress_bar(out: &Output, rounds: u32) -> Option<ProgressBar> {
    if out.json || !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(u64::from(rounds)), ProgressDrawTarget::stdout());
    let style =
        ProgressStyle::with_template("{spinner} round {pos}/{len} [{bar:30}] {elapsed_precise}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

fn round_line(out: &Output, r: &RoundRecord, rounds: u32) -> String {
    let width = rounds.to_string().len();
    match r.status {
        RoundStatus::Committed => {
            format!(
                "round {:>w$}/{rounds}  acc {}  loss {:.4}  {:>2}/{} clients  {:>8} up  {:>6} ms  {}",
                r.round,
                out.bold(&format!("{:.3}", r.accuracy.unwrap_or(f64::NAN))),
                r.loss.unwrap_or(f64::NAN),
                r.participants,
                r.selected,
                human_bytes(r.upload_bytes),
                r.duration_ms,
                out.green("committed"),
                w = width,
            ) + &r.epsilon.map(|e| format!("  ε {e:.3}")).unwrap_or_default()
                + &r.federated
                    .as_ref()
                    .map(|f| {
                        format!(
                            "  federated acc {:.3} ({}/{} clients)",
                            f.accuracy, f.answered, f.asked
                        )
                    })
                    .unwrap_or_default()
        }
        _ => format!(
            "round {:>w$}/{rounds}  {}  {}",
            r.round,
            out.red("failed"),
            r.reason.as_deref().unwrap_or("unknown reason"),
            w = width,
        ),
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KB", "MB", "GB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn privacy_line(p: &PrivacySpec, clients: u32, calibrated: bool) -> String {
    let how = if calibrated {
        "calibrated so every round fits"
    } else {
        "as given"
    };
    let mechanism = match p.mode {
        DpMode::Central(c) => format!(
            "user-level DP-FedAvg: Poisson sampling q = {} of {clients} clients, {}, noise multiplier z = {:.4} ({how})",
            c.client_sampling_rate.get(),
            match c.clip {
                ClipSpec::Fixed { norm } => format!("update clip C = {}", norm.get()),
                ClipSpec::Adaptive {
                    initial,
                    target_quantile,
                    ..
                } => format!(
                    "adaptive clip from C = {} toward the {} quantile",
                    initial.get(),
                    target_quantile.get()
                ),
                _ => "clip".into(),
            },
            c.noise_multiplier.get()
        ),
        DpMode::Distributed(d) => format!(
            "distributed DP under secure aggregation: Poisson sampling q = {} of {clients} clients, clip {}, \
             Skellam noise of variance ≥ {:.1} in every unmasked sum (integer units, scale {:.1}): \
             each client adds its share for a floor of {} survivors, and honest clients refuse to unmask with fewer ({how})",
            d.client_sampling_rate.get(),
            d.clip.get(),
            d.central_variance,
            d.scale,
            d.min_survivors
        ),
        DpMode::LocalSgd(s) => format!(
            "sample-level DP-SGD: {} steps/round, Poisson rate q = {} per example, per-example clip {}, σ = {:.4} ({how})",
            s.steps_per_round,
            s.sampling_rate.get(),
            s.max_grad_norm.get(),
            s.noise_multiplier.get()
        ),
        _ => "differential privacy".into(),
    };
    format!(
        "privacy: {mechanism}; budget ε ≤ {} at δ = {} ({} accountant)",
        p.target_epsilon.get(),
        p.delta.get(),
        p.accountant
    )
}
