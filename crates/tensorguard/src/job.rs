//! The demo's flags as job sections (tg-job resolves them, as it resolves a
//! job file).

use tg_job::{Job, JobSection, PrivacySection, Runner, SecureSection};

use crate::cli::{self, DemoArgs, DpModeArg};
use crate::errors::{Code, UserError, from_job, invalid};

/// The `[job]` keys the flags set.
fn flags(a: &DemoArgs) -> JobSection {
    JobSection {
        clients: a.clients,
        rounds: a.rounds,
        strategy: a.strategy.clone(),
        partition: a.partition.clone(),
        dataset: a.dataset.clone(),
        model: a.model.clone(),
        local_epochs: a.local_epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        optimizer: a.optimizer.clone(),
        compress: a.compress.clone(),
        fraction: a.fraction,
        min_clients: a.min_clients,
        dropout: a.dropout,
        seed: a.seed,
        hidden: a.hidden,
        mu: a.mu,
        server_lr: a.server_lr,
        evaluate_every: a.evaluate_every,
        gate_margin: None,
        gate_episodes: None,
        aggregator: a.robust.aggregator.clone(),
        byzantine: a.robust.byzantine.or_else(|| sized_for_attackers(a)),
        norm_bound: a.robust.norm_bound,
        reputation: a.robust.reputation.then_some(true),
        reputation_window: None,
        reputation_downweight_after: None,
        reputation_exclude_after: None,
        reputation_flag_z: None,
        attested_aggregator: None,
    }
}

/// With a simulated attack and a rule that takes a number of attackers,
/// the rule is sized for the attackers (⌊F·clients + ½⌋), as the attack
/// suite compares rules that know f.
fn sized_for_attackers(a: &DemoArgs) -> Option<u32> {
    let f = a.robust.attackers?;
    let kind: tg_types::robust::AggregatorKind = a.robust.aggregator.as_deref()?.parse().ok()?;
    if matches!(
        kind,
        tg_types::robust::AggregatorKind::FedAvg | tg_types::robust::AggregatorKind::NormBound
    ) {
        return None;
    }
    let clients = a.clients.unwrap_or(tg_job::defaults::CLIENTS);
    Some((f * f64::from(clients) + 0.5).floor() as u32)
}

fn setting(s: &str) -> tg_job::Setting {
    match s.parse::<f64>() {
        Ok(v) => tg_job::Setting::Number(v),
        Err(_) => tg_job::Setting::Word(s.to_owned()),
    }
}

fn accountant_name(a: cli::AccountantKind) -> &'static str {
    match a {
        cli::AccountantKind::Rdp => "rdp",
        cli::AccountantKind::Pld => "pld",
        cli::AccountantKind::Skellam => "skellam",
    }
}

/// The `[privacy]` keys the `--dp …` flags set.
fn privacy(a: &DemoArgs) -> Result<Option<PrivacySection>, UserError> {
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
        return Ok(None);
    };
    let (name, accountant) = match (mode, dp.accountant) {
        (DpModeArg::Distributed, cli::AccountantKind::Skellam) => ("distributed", Some("skellam")),
        // The flag's default names a Gaussian accountant; Skellam is implied.
        (DpModeArg::Distributed, _) => ("distributed", None),
        (DpModeArg::Central, a) => ("central", Some(accountant_name(a))),
        (DpModeArg::LocalSgd, a) => ("local-sgd", Some(accountant_name(a))),
    };
    Ok(Some(PrivacySection {
        mode: Some(name.into()),
        target_epsilon: dp.target_epsilon,
        delta: Some(dp.delta),
        accountant: accountant.map(str::to_owned),
        noise_multiplier: Some(setting(&dp.noise_multiplier)),
        clip: dp.clip.as_deref().map(setting),
        population: dp.population,
        budget_against: Some(
            match dp.budget_against {
                cli::BudgetAgainstArg::Others => "others",
                cli::BudgetAgainstArg::Coordinator => "coordinator",
            }
            .into(),
        ),
        ..Default::default()
    }))
}

/// The `[secure_aggregation]` keys the flags set.
fn secure(a: &DemoArgs) -> Result<Option<SecureSection>, UserError> {
    let s = &a.secure;
    let distributed = matches!(a.dp.dp, Some(DpModeArg::Distributed));
    if !s.secure_aggregation && !distributed {
        if s.sparsity.is_some() {
            return Err(invalid(
                "--sparsity without --secure-aggregation",
                "shared random-k sparsification is the compression of a secure upload",
                "add --secure-aggregation",
            ));
        }
        return Ok(None);
    }
    Ok(Some(SecureSection {
        bits: Some(s.bits),
        // Under distributed DP the clip is the privacy's (--clip).
        clip: (!distributed).then_some(s.secagg_clip),
        sparsity: s.sparsity,
        ..Default::default()
    }))
}

/// The demo's job: flags over the config file's `[demo]` table over the
/// defaults, with the DP and secure-aggregation flags.
pub fn from_flags(a: &DemoArgs, file: &JobSection) -> Result<Job, UserError> {
    let privacy = privacy(a)?;
    let secure = secure(a)?;
    Job::resolve(
        &flags(a).over(file),
        privacy.as_ref(),
        secure.as_ref(),
        Runner::Simulation,
    )
    .map_err(from_job)
}

/// The job a job file describes, for the demo: the same parser (and the
/// same refusals) as `coordinator start --job` and the API. A job that
/// trains the operator's own model (`[model] initial`) needs learners that
/// bring its code, which the demo's built-in agents are not.
pub fn from_file(path: &std::path::Path) -> Result<tg_job::JobFile, UserError> {
    let bytes = std::fs::read(path).map_err(|e| {
        UserError::new(
            Code::ConfigInvalid,
            format!("cannot read job file {}", path.display()),
            e.to_string(),
            "check the path (examples: deploy/examples/*.toml)",
        )
    })?;
    let file = tg_job::parse_file(&path.display().to_string(), &bytes).map_err(from_job)?;
    if let Some(model) = &file.initial_model {
        return Err(UserError::new(
            Code::InvalidValue,
            format!("job file {}: [model] initial = \"{model}\"", path.display()),
            "the demo's agents train the built-in models only; this job trains the operator's own model",
            "run it in Python with tensorguard.simulation.run, or on a fleet: `tensorguard coordinator start --job FILE` with agents started by tensorguard.Agent",
        ));
    }
    Ok(file)
}
