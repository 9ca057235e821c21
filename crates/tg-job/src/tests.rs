//! One resolver, every way of writing a job.

use tg_types::privacy::DpMode;

use super::*;

fn facts(clients: usize) -> Facts {
    Facts {
        num_parameters: 4810,
        train_examples: 1437,
        client_sizes: Some(vec![1437 / clients; clients]),
    }
}

fn privacy(mode: &str, eps: f64) -> PrivacySection {
    PrivacySection {
        mode: Some(mode.into()),
        target_epsilon: Some(eps),
        ..Default::default()
    }
}

#[test]
fn flags_over_file_over_defaults() {
    let file = JobSection {
        clients: Some(7),
        rounds: Some(3),
        ..Default::default()
    };
    let flags = JobSection {
        rounds: Some(9),
        ..Default::default()
    };
    let job = Job::resolve(&flags.over(&file), None, None, Runner::Simulation).unwrap();
    let s = job.spec();
    assert_eq!((s.clients, s.rounds, s.min_clients), (7, 9, 4));
    assert_eq!(s.train.local_epochs, defaults::LOCAL_EPOCHS);
}

#[test]
fn a_bad_value_names_its_key_and_family() {
    let s = JobSection {
        clients: Some(3),
        min_clients: Some(5),
        ..Default::default()
    };
    let e = Job::resolve(&s, None, None, Runner::Fleet).unwrap_err();
    assert!(matches!(e, JobError::Quorum(_)), "{e:?}");
    assert_eq!(e.key(), Some("min_clients"));
    let s = JobSection {
        partition: Some("dirichlet:-1".into()),
        ..Default::default()
    };
    let e = Job::resolve(&s, None, None, Runner::Fleet).unwrap_err();
    assert_eq!(e.key(), Some("partition"));
}

#[test]
fn scaffold_with_secure_aggregation_is_refused_before_any_data() {
    let s = JobSection {
        strategy: Some("scaffold".into()),
        ..Default::default()
    };
    let e = Job::resolve(&s, None, Some(&SecureSection::default()), Runner::Fleet).unwrap_err();
    assert!(matches!(e, JobError::Invalid(_)));
    assert!(e.to_string().contains("SCAFFOLD"), "{e}");
    let e = Job::resolve(&s, Some(&privacy("central", 4.0)), None, Runner::Fleet).unwrap_err();
    assert!(e.to_string().contains("SCAFFOLD"), "{e}");
}

#[test]
fn user_level_dp_samples_a_population() {
    let p = PrivacySection {
        population: Some(40),
        ..privacy("central", 8.0)
    };
    let job = Job::resolve(&JobSection::default(), Some(&p), None, Runner::Simulation).unwrap();
    assert_eq!((job.spec().clients, job.spec().min_clients), (40, 1));
    // A fleet plans its clients; the population may be larger, never smaller.
    let s = JobSection {
        clients: Some(50),
        ..Default::default()
    };
    assert!(Job::resolve(&s, Some(&p), None, Runner::Fleet).is_err());
}

#[test]
fn auto_noise_meets_the_budget_and_a_given_sigma_is_kept() {
    let s = JobSection {
        rounds: Some(5),
        fraction: Some(0.5),
        ..Default::default()
    };
    let p = PrivacySection {
        clip: Some(Setting::Number(1.0)),
        ..privacy("central", 4.0)
    };
    let job = Job::resolve(&s, Some(&p), None, Runner::Fleet).unwrap();
    let plan = job.plan(&facts(10)).unwrap();
    let spent = plan.spec.privacy.unwrap().epsilon_after(5).unwrap();
    assert!(plan.calibrated && spent <= 4.0 && spent > 3.9, "{spent}");
    let p = PrivacySection {
        noise_multiplier: Some(Setting::Number(2.0)),
        ..p
    };
    let plan = Job::resolve(&s, Some(&p), None, Runner::Fleet)
        .unwrap()
        .plan(&facts(10))
        .unwrap();
    let Some(DpMode::Central(c)) = plan.spec.privacy.map(|p| p.mode) else {
        panic!("central");
    };
    assert_eq!((c.noise_multiplier.get(), plan.calibrated), (2.0, false));
}

#[test]
fn dp_sgd_rate_comes_from_the_data_or_must_be_given() {
    let s = JobSection::default();
    let p = privacy("local-sgd", 8.0);
    let sim = Job::resolve(&s, Some(&p), None, Runner::Simulation).unwrap();
    let plan = sim.plan(&facts(10)).unwrap();
    let Some(d) = plan.spec.train.dp_sgd else {
        panic!("DP-SGD on every client");
    };
    assert!((d.sampling_rate.get() - 16.0 / 143.0).abs() < 1e-9);
    let fleet = Job::resolve(&s, Some(&p), None, Runner::Fleet).unwrap();
    let no_sizes = Facts {
        client_sizes: None,
        ..facts(10)
    };
    let e = fleet.plan(&no_sizes).unwrap_err();
    assert_eq!(e.key(), Some("privacy.sampling_rate"));
}

#[test]
fn distributed_dp_implies_secure_aggregation_and_meets_the_budget() {
    let s = JobSection {
        clients: Some(20),
        rounds: Some(3),
        ..Default::default()
    };
    let job = Job::resolve(&s, Some(&privacy("distributed", 6.0)), None, Runner::Fleet).unwrap();
    let plan = job.plan(&facts(20)).unwrap();
    let secure = plan.spec.secure_aggregation.expect("implied");
    let privacy = plan.spec.privacy.unwrap();
    let Some(d) = (match privacy.mode {
        DpMode::Distributed(d) => Some(d),
        _ => None,
    }) else {
        panic!("distributed")
    };
    assert_eq!(secure.clip, d.clip.get());
    let spent = privacy.epsilon_after(3).unwrap();
    assert!(spent <= 6.0, "{spent}");
}

#[test]
fn unknown_keys_and_bad_tables_in_a_file_are_refused_by_family() {
    let e = parse_file("t", b"[job]\nclinets = 3\n").unwrap_err();
    assert!(matches!(e, JobError::UnknownKey(_)), "{e:?}");
    let e = parse_file("t", b"[job\n").unwrap_err();
    assert!(matches!(e, JobError::Syntax(_)), "{e:?}");
    let e = parse_file(
        "t",
        b"[job]\nclients = 4\n[admission]\nfleet_root = \"abc\"\n",
    )
    .unwrap_err();
    assert_eq!(e.key(), Some("admission.fleet_root"));
    let f = parse_file("t", b"[job]\nclients = 4\n").unwrap();
    assert_eq!(f.id, parse_file("t", b"[job]\nclients = 4\n").unwrap().id);
    assert_eq!(f.job.spec().dropout, 0.0);
}

#[test]
fn attestation_must_pin_code_or_say_any() {
    let base = "[job]\ndataset = \"digits\"\nclients = 4\n\n[attestation]\nrequired = true\n";
    let e = parse_file("t", base.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("measurements"), "{e}");
    let any = format!("{base}[attestation.policy]\nmeasurements = \"any\"\n");
    let f = parse_file("t", any.as_bytes()).expect("\"any\" is explicit");
    assert!(f.attestation.expect("required").admits_any_code());
}

#[test]
fn simulated_noise_is_only_for_the_coordinators_noise_and_is_carried_to_the_plan() {
    let p = PrivacySection {
        simulated_noise_seed: Some(7),
        clip: Some(Setting::Number(1.0)),
        ..privacy("central", 8.0)
    };
    let job = Job::resolve(&JobSection::default(), Some(&p), None, Runner::Fleet).unwrap();
    let plan = job.plan(&facts(10)).unwrap();
    assert_eq!(plan.spec.simulated_noise_seed, Some(7));
    assert!(plan.simulation_label().unwrap().contains("NOT private"));
    for mode in ["local-sgd", "distributed"] {
        let p = PrivacySection {
            simulated_noise_seed: Some(7),
            ..privacy(mode, 8.0)
        };
        let e = Job::resolve(&JobSection::default(), Some(&p), None, Runner::Fleet).unwrap_err();
        assert_eq!(e.key(), Some("privacy.simulated_noise_seed"), "{mode}");
    }
    let real = Job::resolve(
        &JobSection::default(),
        Some(&PrivacySection {
            clip: Some(Setting::Number(1.0)),
            ..privacy("central", 8.0)
        }),
        None,
        Runner::Fleet,
    )
    .unwrap()
    .plan(&facts(10))
    .unwrap();
    assert!(real.spec.simulated_noise_seed.is_none() && real.simulation_label().is_none());
}

#[test]
fn federated_evaluation_is_refused_with_dp() {
    let s = JobSection {
        evaluate_every: Some(2),
        ..Default::default()
    };
    let job = Job::resolve(&s, None, None, Runner::Fleet).unwrap();
    assert_eq!(job.spec().evaluate_every, 2);
    let e = Job::resolve(&s, Some(&privacy("local-sgd", 8.0)), None, Runner::Fleet).unwrap_err();
    assert!(e.to_string().contains("federated evaluation"), "{e}");
}

#[test]
fn the_rollout_gate_is_read_checked_and_refused_with_dp() {
    let f = parse_file("t", b"[job]\nclients = 3\ngate_margin = 0.05\n").unwrap();
    let g = f.job.spec().gate.expect("a gate key turns the gate on");
    assert_eq!((g.margin, g.min_episodes), (0.05, 20));
    assert!(
        parse_file("t", b"[job]\nclients = 3\n")
            .unwrap()
            .job
            .spec()
            .gate
            .is_none()
    );
    for bad in [
        "gate_margin = 1.0",
        "gate_margin = -0.1",
        "gate_episodes = 0",
    ] {
        let text = format!("[job]\nclients = 3\n{bad}\n");
        let e = parse_file("t", text.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("gate_"), "{bad}: {e}");
    }
    let s = JobSection {
        gate_episodes: Some(10),
        ..Default::default()
    };
    for mode in ["local-sgd", "central"] {
        let e = Job::resolve(&s, Some(&privacy(mode, 8.0)), None, Runner::Fleet).unwrap_err();
        assert!(e.to_string().contains("rollout gate"), "{e}");
    }
    // Strategies whose state a rejected candidate would already have moved.
    for strategy in ["fedadam", "scaffold"] {
        let text = format!("[job]\nclients = 3\nstrategy = \"{strategy}\"\ngate_margin = 0.0\n");
        let e = parse_file("t", text.as_bytes()).unwrap_err();
        assert!(
            e.to_string().contains("keeps state across rounds"),
            "{strategy}: {e}"
        );
    }
}

#[test]
fn expert_wise_refuses_what_would_drop_its_weights() {
    let e = parse_file(
        "t",
        b"[job]\nclients = 3\nstrategy = \"expert-wise\"\ncompress = \"topk:0.1\"\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("expert-wise"), "{e}");
    let e = parse_file(
        "t",
        b"[job]\nclients = 5\nstrategy = \"expert-wise\"\n[secure_aggregation]\nsparsity = 0.5\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("sparsity"), "{e}");
    assert!(
        parse_file(
            "t",
            b"[job]\nclients = 5\nstrategy = \"expert-wise\"\n[secure_aggregation]\n"
        )
        .is_ok()
    );
}

#[test]
fn an_operator_model_job_names_no_built_in_model_and_asks_only_what_sdk_learners_do() {
    let f = parse_file(
        "t",
        b"[job]\nclients = 3\n[model]\ninitial = \"init.safetensors\"\n",
    )
    .unwrap();
    assert_eq!(f.initial_model.as_deref(), Some("init.safetensors"));
    assert!(
        parse_file("t", b"[job]\nclients = 3\n")
            .unwrap()
            .initial_model
            .is_none()
    );
    for (extra, key) in [
        ("model = \"mlp\"\n", "job.model"),
        ("hidden = 8\n", "job.hidden"),
        ("dataset = \"digits\"\n", "job.dataset"),
        ("strategy = \"scaffold\"\n", "job.strategy"),
    ] {
        let text = format!("[job]\nclients = 3\n{extra}[model]\ninitial = \"m.safetensors\"\n");
        let e = parse_file("t", text.as_bytes()).unwrap_err();
        assert!(matches!(e, JobError::Invalid(_)), "{extra}: {e:?}");
        assert_eq!(e.key(), Some(key), "{extra}");
    }
    let dp_sgd = "[job]\nclients = 3\n[privacy]\nmode = \"local-sgd\"\ntarget_epsilon = 8.0\n\
                  [model]\ninitial = \"m.safetensors\"\n";
    let e = parse_file("t", dp_sgd.as_bytes()).unwrap_err();
    assert_eq!(e.key(), Some("privacy.mode"), "{e:?}");
    let e = parse_file("t", b"[job]\n[model]\ninitial = \" \"\n").unwrap_err();
    assert_eq!(e.key(), Some("model.initial"));
    // Unknown keys in the table are errors, as everywhere in a job file.
    let e = parse_file("t", b"[job]\n[model]\ninitial = \"m\"\nkind = \"cnn\"\n").unwrap_err();
    assert!(matches!(e, JobError::UnknownKey(_)), "{e:?}");
}

#[test]
fn robust_aggregators_are_read_sized_and_refused_where_they_cannot_work() {
    let job = parse_file(
        "t",
        b"[job]\nclients = 20\naggregator = \"bulyan\"\nbyzantine = 4\n",
    )
    .unwrap();
    let r = job.job.spec().robust.unwrap();
    assert_eq!(
        (r.kind.to_string().as_str(), r.f, r.min_updates()),
        ("bulyan", 4, 19)
    );
    // f too large for the round.
    let e = parse_file(
        "t",
        b"[job]\nclients = 10\naggregator = \"bulyan\"\nbyzantine = 2\n",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("at least 11") && e.to_string().contains("multi-krum"),
        "{e}"
    );
    // Unknown names list the forms.
    let e = parse_file("t", b"[job]\naggregator = \"krumm\"\n").unwrap_err();
    assert!(e.to_string().contains("outlier-3sigma"), "{e}");
    // With secure aggregation: say why and what to use instead.
    let e = parse_file(
        "t",
        b"[job]\nclients = 10\naggregator = \"median\"\nbyzantine = 1\n[secure_aggregation]\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("rollout gate"), "{e}");
    // With DP, SCAFFOLD and compression.
    let e = parse_file(
        "t",
        b"[job]\nclients = 10\naggregator = \"krum\"\nbyzantine = 1\n[privacy]\nmode = \"central\"\ntarget_epsilon = 4.0\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("accountant"), "{e}");
    let e = parse_file(
        "t",
        b"[job]\nclients = 10\nstrategy = \"scaffold\"\naggregator = \"median\"\nbyzantine = 1\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("scaffold"), "{e}");
    // byzantine without an aggregator, and f with fedavg.
    let e = parse_file("t", b"[job]\nbyzantine = 2\n").unwrap_err();
    assert!(e.to_string().contains("without an aggregator"), "{e}");
    let e = parse_file("t", b"[job]\naggregator = \"fedavg\"\nbyzantine = 2\n").unwrap_err();
    assert!(e.to_string().contains("does not take"), "{e}");
    // fedavg with byzantine = 0 is no wrapper at all, so central DP keeps its clip.
    let job = parse_file(
        "t",
        b"[job]\nclients = 10\naggregator = \"fedavg\"\nbyzantine = 0\n[privacy]\nmode = \"central\"\ntarget_epsilon = 4.0\n",
    )
    .unwrap();
    assert!(job.job.spec().robust.is_none());
    // A quorum below the rule's minimum would let rounds fail: refused.
    let e = parse_file(
        "t",
        b"[job]\nclients = 20\nmin_clients = 5\naggregator = \"krum\"\nbyzantine = 2\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("min_clients"), "{e}");
    // The same rule through flags (the demo and the API resolve the same section).
    let flags = JobSection {
        clients: Some(10),
        aggregator: Some("bulyan".into()),
        byzantine: Some(2),
        ..Default::default()
    };
    let e = Job::resolve(&flags, None, None, Runner::Simulation).unwrap_err();
    assert!(e.to_string().contains("at least 11"), "{e}");
}

#[test]
fn reputation_is_read_checked_and_needs_a_screening_rule() {
    let job = parse_file(
        "t",
        b"[job]\nclients = 10\naggregator = \"outlier-3sigma\"\nbyzantine = 1\nreputation_exclude_after = 4\nreputation_flag_z = 6.5\n",
    )
    .unwrap();
    let p = job.job.spec().reputation.unwrap();
    assert_eq!((p.window, p.downweight_after, p.exclude_after), (10, 1, 4));
    assert_eq!(p.flag_z, 6.5);
    let job = parse_file(
        "t",
        b"[job]\nclients = 10\naggregator = \"median\"\nbyzantine = 1\nreputation = true\n",
    )
    .unwrap();
    assert_eq!(
        job.job.spec().reputation,
        Some(tg_types::reputation::ReputationPolicy::default())
    );
    for (file, why) in [
        (&b"[job]\nreputation = true\n"[..], "screen no individual update"),
        (
            b"[job]\naggregator = \"norm-bound\"\nnorm_bound = 1.0\nreputation = true\n",
            "screen no individual update",
        ),
        (
            b"[job]\nclients = 10\naggregator = \"median\"\nbyzantine = 1\nreputation = false\nreputation_window = 5\n",
            "reputation = true",
        ),
        (
            b"[job]\nclients = 10\naggregator = \"median\"\nbyzantine = 1\nreputation_exclude_after = 20\n",
            "reputation_exclude_after",
        ),
        (
            b"[job]\nclients = 10\naggregator = \"median\"\nbyzantine = 1\nreputation_flag_z = 1.0\n",
            "reputation_flag_z",
        ),
        (
            b"[job]\nclients = 10\naggregator = \"median\"\nbyzantine = 1\nreputation = 3\n",
            "reputation",
        ),
    ] {
        let e = parse_file("t", file).unwrap_err();
        assert!(
            e.to_string().contains(why),
            "{}: {e}",
            String::from_utf8_lossy(file)
        );
    }
}

#[test]
fn an_attested_aggregator_is_read_and_refused_with_secure_aggregation() {
    let job = parse_file(
        "t",
        b"[job]\nclients = 10\nattested_aggregator = true\naggregator = \"median\"\nbyzantine = 1\n",
    )
    .unwrap();
    assert!(job.job.spec().attested_aggregator);
    let e = parse_file(
        "t",
        b"[job]\nclients = 10\nattested_aggregator = true\n[secure_aggregation]\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("one or the other"), "{e}");
}
