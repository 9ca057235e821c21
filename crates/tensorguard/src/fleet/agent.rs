//! `tensorguard agent start`: join a coordinator's job with local data.

use std::path::Path;
use std::sync::Arc;

use tg_agent::net::{JoinConfig, Runner, Status};
use tg_model::load_dataset;
use tg_model::partition::partition;
use tg_types::spec::{DatasetSpec, PartitionSpec};

use crate::cli::AgentStartArgs;
use crate::errors::{Code, UserError, from_model, invalid};
use crate::output::Output;

/// The local training data: a dataset, or one shard of it (`--shard I/N`,
/// for demonstrations where every agent starts from the same public data).
pub fn local_data(args: &AgentStartArgs) -> Result<tg_model::Dataset, UserError> {
    let spec: DatasetSpec = args
        .dataset
        .parse()
        .map_err(|e: tg_types::spec::SpecError| {
            invalid(
                format!("--dataset {}", args.dataset),
                e.to_string(),
                "use digits, csv:PATH or mnist:DIR",
            )
        })?;
    let split = load_dataset(&spec).map_err(from_model)?;
    let Some(shard) = &args.shard else {
        return Ok(split.train);
    };
    let bad = || {
        invalid(
            format!("--shard {shard}"),
            "a shard is I/N with 0 ≤ I < N",
            "use e.g. --shard 3/10",
        )
    };
    let (i, n) = shard.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if n == 0 || i >= n {
        return Err(bad());
    }
    let scheme: PartitionSpec =
        args.partition
            .parse()
            .map_err(|e: tg_types::spec::SpecError| {
                invalid(
                    format!("--partition {}", args.partition),
                    e.to_string(),
                    "use iid, dirichlet:0.5 or shards:2",
                )
            })?;
    let parts = partition(split.train.labels(), n, scheme, args.seed).map_err(from_model)?;
    Ok(split.train.subset(&parts[i]))
}

/// Runs the agent in the foreground until its job ends (`--once`) or it is stopped.
/// The agent's fleet certificate, if given.
fn certificate(args: &AgentStartArgs) -> Result<Option<tg_proto::Certificate>, UserError> {
    let Some(path) = &args.certificate else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(
            format!("--certificate {}", path.display()),
            e.to_string(),
            "point it at the file `keys certify` printed",
        )
    })?;
    tg_proto::Certificate::from_text(&text)
        .map(Some)
        .map_err(|e| {
            invalid(
                format!("--certificate {}", path.display()),
                e.to_string(),
                "ask the fleet's operator for a new certificate (`tensorguard keys certify`)",
            )
        })
}

/// The data owner's policy: the file's, then `--allow-plaintext`.
fn owner_policy(args: &AgentStartArgs) -> Result<tg_agent::OwnerPolicy, UserError> {
    let mut policy = match &args.policy {
        None => tg_agent::OwnerPolicy::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    format!("--policy {}", path.display()),
                    e.to_string(),
                    "point --policy at a readable TOML file",
                )
            })?;
            tg_agent::OwnerPolicy::from_toml(&text).map_err(|e| {
                invalid(
                    format!("--policy {}", path.display()),
                    e,
                    "top-level keys: allow_plaintext, allow_evaluation, fleet_root, max_round_epsilon, \
                     max_local_epochs, max_dp_steps, max_update_bytes, budget_scope; [budget] epsilon/delta; \
                     [secure_aggregation] min_participants/min_threshold/min_survivor_fraction/\
                     assumed_corrupt/allow_semi_honest/max_colluders",
                )
            })?
        }
    };
    policy.allow_plaintext |= args.allow_plaintext;
    Ok(policy)
}

pub fn start(args: &AgentStartArgs, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    if args.coordinator.is_none() && !args.discover {
        return Err(UserError::new(
            Code::Usage,
            "no coordinator to join",
            "the agent needs an address or LAN discovery",
            "pass --coordinator /ip4/HOST/tcp/7700/p2p/PEER_ID (printed by `coordinator start`), or --discover",
        ));
    }
    let started = std::time::Instant::now();
    let data = local_data(args)?;
    let attack = simulated_attack(args, &data)?;
    let key = super::identity(data_dir, args.key_file.as_deref())?;
    let mut config = JoinConfig {
        coordinator: args.coordinator.clone(),
        discover: args.discover,
        name: args
            .name
            .clone()
            .unwrap_or_else(|| std::env::var("HOSTNAME").unwrap_or_else(|_| "agent".into())),
        token: args.enroll.clone(),
        seed: args.seed,
        once: args.once,
        // Shard i shuffles as the in-process agent i does.
        attest: attest_config(args)?,
        policy: owner_policy(args)?,
        ledger_dir: Some(data_dir.to_owned()),
        certificate: certificate(args)?,
        seed_name: args
            .shard
            .as_ref()
            .and_then(|s| s.split_once('/'))
            .and_then(|(i, _)| i.parse().ok())
            .map(|i: usize| tg_types::AgentId::numbered(i).as_str().to_owned()),
    };
    config
        .settle_roster(&key.signing_key().verifying_key().to_bytes())
        .map_err(|e| {
            invalid(
                "this agent cannot take part as configured (--certificate, --policy)",
                e,
                "use the certificate the fleet's operator issued for this agent's identity (`tensorguard keys export-public`), and a policy that pins the same root",
            )
        })?;
    // Settled before anything starts: a background `up` reports success
    // only for an agent that can take part.
    match config.policy.roster() {
        Ok(tg_agent::Roster::TrustCoordinator) => out.note(&out.red("fleet_root = \"trust-coordinator\": the coordinator chooses who takes part — secure aggregation hides this agent's update from other agents, not from a coordinator that seats identities of its own")),
        Ok(tg_agent::Roster::Pinned(root)) => out.note(&format!(
            "fleet root {} pinned: secure rounds need every participant certified by it (its holder must not be the coordinator's operator, or this pin trusts the coordinator)",
            hex::encode(root)
        )),
        _ => {}
    }
    let rt = crate::errors::runtime()?;
    let status = Arc::new(Status::default());
    rt.block_on(async {
        let mut net = tg_net::Config::new(tg_net::Role::Agent, args.listen.clone());
        net.mdns = args.discover;
        net.channel_capacity = 64;
        let (client, events) = super::start_node(&key, net)?;
        let metrics = tg_metrics::Metrics::new("agent");
        let disk_dir = data_dir.to_owned();
        metrics.attach_disk(move || super::disk_space(&disk_dir));
        if let Some(addr) = args.metrics {
            super::serve_metrics(addr, metrics.clone(), None, &Default::default(), out).await?;
        }
        if let Some(socket) = &args.control_socket {
            tg_agent::control::serve(socket, status.clone(), Arc::new(|| std::process::exit(0)))
                .await
                .map_err(super::daemon::control_error)?;
        }
        out.note(&format!(
            "agent {} · {} local examples",
            client.local_peer_id(),
            data.len()
        ));
        if args.insecure {
            out.note(&out.red("UNTRUSTED: --insecure — without a TEE this agent sends simulated attestation; no one can verify what code runs here"));
        }
        if let Some(a) = &attack {
            out.note(&out.red(&attack_label(a.kind())));
        }
        // Report readiness (joined) once, for operators and start-up timing.
        let watch = status.clone();
        let json = out.json;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let s = watch.snapshot();
                if s.state == "joined" {
                    let ms = started.elapsed().as_millis();
                    if json {
                        eprintln!("{}", serde_json::json!({"event": "ready", "peer_id": s.peer_id, "job": s.job, "ready_ms": ms, "aggregator": s.aggregator}));
                    } else {
                        eprintln!("joined job {} ({ms} ms after start)", s.job.unwrap_or_default());
                        if let Some(a) = &s.aggregator {
                            eprintln!("updates are sealed to the job's aggregator — {a}");
                        }
                    }
                    return;
                }
            }
        });
        let local: Arc<dyn tg_agent::LocalTraining> = match attack {
            Some(a) => Arc::new(a),
            None => Arc::new(tg_agent::CandleTraining::new(data)),
        };
        let runner = Runner::new(client, events, key.signing_key().clone(), local, config, status.clone(), metrics);
        runner.run().await.map_err(tg_diag::from_agent)
    })?;
    let s = status.snapshot();
    let label = args
        .simulate_attack
        .as_deref()
        .and_then(|k| k.parse().ok())
        .map(attack_label);
    if out.json {
        let mut v = serde_json::to_value(&s).unwrap_or_default();
        if let Some(l) = &label {
            v["simulation"] = serde_json::json!(l);
        }
        out.json_value(&v);
    } else {
        out.line(&format!(
            "job {} finished; answered {} requests",
            s.job.unwrap_or_default(),
            s.answered
        ));
        if let Some(l) = &label {
            out.line(&out.red(l));
        }
    }
    Ok(())
}

/// What every output of an attacking agent says.
fn attack_label(kind: tg_inproc::attack::AttackKind) -> String {
    format!(
        "SIMULATED ATTACK: this agent poisons the federation ({kind}) to test the coordinator's defences; its updates are not honest"
    )
}

/// `--simulate-attack`: the attacking training, checked; refused under a
/// data owner's policy (a production agent's).
fn simulated_attack(
    args: &AgentStartArgs,
    data: &tg_model::Dataset,
) -> Result<Option<tg_inproc::attack::AttackingTraining>, UserError> {
    let Some(kind) = &args.simulate_attack else {
        return Ok(None);
    };
    if args.policy.is_some() {
        return Err(invalid(
            "--simulate-attack with a data owner's --policy",
            "a simulated attack is a test of the coordinator's defences, and a policy file makes this a production agent",
            "run the attacking agent without --policy (on test data), or drop --simulate-attack",
        ));
    }
    let kind: tg_inproc::attack::AttackKind = kind.parse().map_err(|e: String| {
        invalid(
            format!("--simulate-attack {kind}"),
            e,
            "use sign-flip, scaling, noise, label-flip or backdoor",
        )
    })?;
    tg_inproc::attack::AttackingTraining::new(kind, data, args.seed)
        .map(Some)
        .map_err(|e| {
            invalid(
                format!("--simulate-attack {kind}"),
                e,
                "pick another attack",
            )
        })
}

fn attest_config(args: &AgentStartArgs) -> Result<tg_agent::tee::AttestConfig, UserError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            UserError::new(
                Code::EvidenceUnreadable,
                format!("cannot read {}", p.display()),
                e.to_string(),
                "check the path",
            )
        })
    };
    let mut certs = Vec::new();
    for p in &args.tee_cert {
        let bytes = read(p)?;
        certs.extend(tg_attest::snp_cert_bundle(&bytes).map_err(|r| {
            UserError::new(
                Code::EvidenceUnreadable,
                format!("{}: {}", p.display(), r.detail),
                "not a DER certificate or PEM bundle",
                "pass the VCEK/VLEK from AMD's KDS",
            )
        })?);
    }
    Ok(tg_agent::tee::AttestConfig {
        root: args.tee_root.clone(),
        insecure: args.insecure,
        certs,
        collateral: args.tee_collateral.as_deref().map(read).transpose()?,
        aggregator: tg_agent::aggregator::AggregatorTrust {
            policy: args
                .aggregator_policy
                .as_deref()
                .map(crate::attest::load_policy)
                .transpose()?,
            allow_simulated: args.allow_simulated_aggregator,
            anchors: tg_attest::TrustAnchors::default(),
        },
    })
}
