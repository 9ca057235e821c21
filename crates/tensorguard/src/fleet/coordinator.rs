//! `tensorguard coordinator start --job JOB.toml`.

use std::path::Path;

use tg_coordinator::admission::AttestationGate;
use tg_coordinator::net::{Admission, NetTransport};
use tg_coordinator::runner::{JobRun, JobSummary};
use tg_model::net::ModelShape;
use tg_model::{init_parameters, load_dataset};
use tg_proto::Offer;
use tg_store::Store;
use tg_trust::audit::AuditEvent;
use tg_types::record::RoundStatus;

use super::audit_sink::{self, NodeAudit};
use super::jobfile::{self, JobFile};
use super::service::{self, CoordinatorOps, Queued};
use crate::cli::CoordinatorStartArgs;
use crate::errors::{CliError, Code, from_model, from_store};
use crate::output::Output;

/// Runs (or resumes) the job of a job file until it finishes; with
/// `--serve`, then keeps running jobs submitted through the REST API.
pub fn start(args: &CoordinatorStartArgs, data_dir: &Path, out: &Output) -> Result<(), CliError> {
    if args.serve && args.api.is_none() {
        return Err(crate::errors::invalid(
            "--serve without --api",
            "a serving coordinator takes its jobs through the REST API",
            "add --api 127.0.0.1:9100",
        ));
    }
    let first = match &args.job {
        Some(path) => Some(jobfile::load(path)?),
        None if args.serve => None,
        None => {
            return Err(crate::errors::invalid(
                "nothing to run",
                "`coordinator start` runs the job of --job JOB.toml, or takes jobs from the REST API with --serve",
                "add --job JOB.toml, or --serve --api 127.0.0.1:9100",
            ));
        }
    };
    let key = super::identity(data_dir, args.key_file.as_deref())?;
    if args.allow_simulated {
        out.note(&out.red("TESTING ONLY: --allow-simulated admits agents with simulated attestation; they are labelled UNTRUSTED in every record"));
    }
    let rt = crate::errors::runtime()?;
    rt.block_on(serve(first, args, key, data_dir, out))
}

/// What every job of this process shares.
struct Shared {
    metrics: std::sync::Arc<tg_metrics::Metrics>,
    audit: std::sync::Arc<NodeAudit>,
    fleet: tg_coordinator::fleet_view::FleetView,
}

async fn serve(
    first: Option<JobFile>,
    args: &CoordinatorStartArgs,
    key: tg_trust::IdentityKey,
    data_dir: &Path,
    out: &Output,
) -> Result<(), CliError> {
    let open = || Store::open(data_dir).map_err(|e| from_store(e, data_dir));
    let metrics = tg_metrics::Metrics::new("coordinator");
    let disk_dir = data_dir.to_owned();
    metrics.attach_disk(move || super::disk_space(&disk_dir));
    let shared = Shared {
        audit: open_audit(data_dir, &key, metrics.clone())?,
        metrics,
        fleet: Default::default(),
    };
    let (queue, mut jobs) = tokio::sync::mpsc::channel(service::QUEUE_CAPACITY);
    let ops = std::sync::Arc::new(CoordinatorOps::new(
        queue,
        open()?,
        data_dir,
        shared.audit.clone(),
        args.serve,
        args.allow_simulated,
    ));
    if let Some(addr) = args.api {
        let mut state = tg_coordinator::api::ApiState::new(open()?);
        state.fleet = shared.fleet.clone();
        state.ops = Some(ops.clone());
        state.audit = Some(shared.audit.clone());
        state.audit_log = Some(crate::keys::audit_log_path(data_dir));
        state.metrics = Some(shared.metrics.clone());
        let api = tg_coordinator::api::router(state);
        super::serve_metrics(addr, shared.metrics.clone(), Some(api), &args.tls, out).await?;
    }
    if let Some(job) = first {
        let id = job.id;
        let stop = ops.track(id);
        let result = run(job, args, &key, data_dir, out, &shared, stop).await;
        ops.finished(id);
        if !args.serve {
            return result;
        }
        if let Err(e) = result {
            out.note(&e.to_string());
        }
    }
    out.note(
        "serving: submit jobs with `POST /api/v1/jobs` (a job file as the body); Ctrl-C stops",
    );
    loop {
        let next = tokio::select! {
            q = jobs.recv() => q,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(Queued { job, stop }) = next else {
            break;
        };
        let id = job.id;
        if !ops.starting(id) {
            out.note(&format!("job {id} was stopped while queued; not run"));
            continue;
        }
        out.note(&format!("job {id} starting (submitted through the API)"));
        if let Err(e) = run(job, args, &key, data_dir, out, &shared, stop).await {
            out.note(&e.to_string());
        }
        ops.finished(id);
    }
    Ok(())
}

async fn run(
    job: JobFile,
    args: &CoordinatorStartArgs,
    key: &tg_trust::IdentityKey,
    data_dir: &Path,
    out: &Output,
    shared: &Shared,
    stop: tg_coordinator::StopSignal,
) -> Result<(), CliError> {
    let mut store = Store::open(data_dir).map_err(|e| from_store(e, data_dir))?;
    let finished = store
        .find_job(&job.id.to_string())
        .ok()
        .filter(|row| row.status != tg_types::record::JobStatus::Interrupted);
    if let Some(row) = finished {
        return Err(CliError::new(
            Code::JobFinished,
            format!("job {} is already {}", job.id, row.status.as_str()),
            "a finished job is never run twice (its model and privacy ledger are final)",
            "to train again, set a new `id` in the job file (or change it), or use another --data-dir",
        ));
    }
    let admissions = Store::open(data_dir).map_err(|e| from_store(e, data_dir))?;
    // A simulated (seeded) noise source is for testing: refused unless the
    // operator says so, and labelled in every output and the audit log.
    let simulation = job.job.simulated_noise_seed().map(tg_job::simulation_label);
    if let Some(label) = &simulation {
        if !args.allow_simulated {
            return Err(CliError::new(
                Code::InvalidValue,
                format!("job {} sets privacy.simulated_noise_seed", job.id),
                "its DP noise would come from a public seed, which anyone can remove: the job would not be private",
                "remove simulated_noise_seed for a real job; to test reproducibility, start the coordinator with --allow-simulated",
            ));
        }
        out.note(&out.red(label));
    }

    // The coordinator's own data: the held-out split that gates every round.
    let what = job.job.spec();
    let split = load_dataset(&what.dataset).map_err(from_model)?;
    let shape =
        ModelShape::for_dataset(what.model, what.hidden, &split.train).map_err(from_model)?;
    let initial = init_parameters(&shape, job.job.spec().seed).map_err(from_model)?;
    // The job's numbers (noise, encoding, weights) from the plan, as in the demo.
    let plan = job
        .job
        .plan(&tg_job::Facts {
            num_parameters: initial.num_values(),
            train_examples: split.train.len(),
            client_sizes: None,
        })
        .map_err(crate::job::error)?;
    let spec = plan.spec.clone();
    let evaluator =
        Box::new(tg_coordinator::plan::HeldOut::new(shape, &split.test).map_err(from_model)?);

    let mut listen = job.listen.clone();
    if !args.listen.is_empty() {
        listen.clone_from(&args.listen);
    }
    let mut net = tg_net::Config::new(tg_net::Role::Coordinator, listen);
    net.mdns = job.mdns && !args.no_mdns;
    net.relays.clone_from(&job.relays);
    net.request_timeout = job.deadlines.stage.max(std::time::Duration::from_secs(10));
    let (client, mut events) = super::start_node(key, net)?;
    let me = client.local_peer_id();

    // Report where agents can reach us before serving anyone.
    let mut addrs = Vec::new();
    let expected = if args.listen.is_empty() {
        job.listen.len()
    } else {
        args.listen.len()
    };
    while addrs.len() < expected.max(1) {
        match tokio::time::timeout(std::time::Duration::from_secs(5), events.recv()).await {
            Ok(Some(tg_net::Event::Listening(a))) => addrs.push(format!("{a}/p2p/{me}")),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let _ = std::fs::write(data_dir.join("coordinator.addrs"), addrs.join("\n") + "\n");
    for a in &addrs {
        out.note(&format!("listening on {a}"));
    }
    out.note(&format!("job {} · peer id {me}", job.id));

    let metrics = shared.metrics.clone();
    metrics.job(Some((
        spec.clients as usize,
        spec.privacy.map(|p| p.target_epsilon.get()),
    )));
    // Whatever happens below, the gauges say no job runs once we return.
    struct Ended(std::sync::Arc<tg_metrics::Metrics>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.job(None);
        }
    }
    let _ended = Ended(metrics.clone());
    let offer = Offer {
        job: job.id,
        model: spec.model,
        hidden: spec.hidden as u32,
        train: spec.train,
        privacy: spec.privacy,
        rounds: spec.rounds,
        enrollment_required: job.enrollment && job.allowed.is_empty(),
        attestation_nonce: None,
        schema: Some(tg_proto::DataSchema {
            features: split.train.num_features() as u32,
            classes: split.train.num_classes() as u32,
            dtype: tg_proto::Dtype::F32,
        }),
    };
    let audit = shared.audit.clone();
    let prg = tg_secagg::crypto::Prg::for_this_cpu();
    let created = audit_sink::job_created(
        &spec,
        job.attestation.as_ref(),
        args.allow_simulated,
        &format!("{prg:?}"),
        simulation.clone(),
    );
    audit.event(job.id, &AuditEvent::JobCreated(Box::new(created)));
    let admission = Admission {
        allowed: job.allowed.clone(),
        tokens: job.enrollment,
        fleet_root: job.fleet_root,
    };
    let mut transport = NetTransport::new(
        client,
        events,
        key.signing_key().clone(),
        offer,
        admission,
        admissions,
        metrics.clone(),
    )
    .with_audit(audit.clone())
    .with_fleet_view(shared.fleet.clone());
    if let Some(policy) = &job.attestation {
        out.note(&format!(
            "attestation required: {}",
            serde_json::to_string(policy).unwrap_or_default()
        ));
        transport = transport.with_attestation(AttestationGate {
            policy: policy.clone(),
            anchors: tg_attest::TrustAnchors::default(),
            allow_simulated: args.allow_simulated,
        });
    }
    let attested = transport.attestations();
    let planned = spec.clients as usize;
    out.note(&format!(
        "waiting for {planned} agents (up to {:?})",
        job.deadlines.join
    ));
    let stop_poll = stop.clone();
    let joined = tokio::select! {
        n = transport.wait_for_agents(planned, job.deadlines.join) => n,
        () = async move {
            while !stop_poll.is_stopped() {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        } => {
            let stopped = JobSummary::before_first_round(
                job.id.to_string(),
                "fleet".into(),
                tg_types::record::JobStatus::Stopped,
                "stopped by an operator before round 1, while waiting for agents".into(),
                spec.rounds,
                simulation.clone(),
            );
            audit.event(job.id, &AuditEvent::JobFinished(Box::new(stopped)));
            out.note(&format!("job {} stopped by an operator while waiting for agents; no round ran", job.id));
            return Ok(());
        }
    };
    if joined < spec.min_clients as usize {
        return Err(CliError::new(
            Code::QuorumTooLarge,
            format!(
                "only {joined} of {planned} agents joined within {:?}",
                job.deadlines.join
            ),
            format!("the job's quorum is {}", spec.min_clients),
            "start more agents (`tensorguard agent start --coordinator ADDR`), or raise deadlines.join_secs",
        ));
    }
    out.note(&format!("{joined} agents joined; starting"));

    let run = JobRun {
        id: job.id,
        kind: "fleet",
        plan: &plan,
        stages: tg_coordinator::plan::Stages {
            train: job.deadlines.train,
            stage: job.deadlines.stage,
        },
        identities: Default::default(),
        prg,
        metrics: Some(metrics.clone()),
        stop: Some(stop),
    };
    let json = out.json;
    let quorum = spec.min_clients;
    let round_audit = audit.clone();
    let finished = run
        .run(transport, evaluator, &mut store, initial, |r| {
            let attested = attested.lock().map(|a| a.clone()).unwrap_or_default();
            round_audit.event(
                job.id,
                &AuditEvent::Round(audit_sink::round(r, quorum, &attested)),
            );
            let line = match r.status {
                RoundStatus::Committed => format!(
                    "round {} committed · {} of {} agents · accuracy {:.4}",
                    r.round,
                    r.participants,
                    r.selected,
                    r.accuracy.unwrap_or(f64::NAN)
                ),
                _ => format!("round {} failed · {}", r.round, r.reason.as_deref().unwrap_or("")),
            };
            if !json {
                eprintln!("{line}");
            } else {
                eprintln!("{}", serde_json::json!({"event": "round", "round": r.round, "status": r.status.as_str(), "participants": r.participants, "accuracy": r.accuracy, "model_sha256": r.model_sha256}));
            }
        })
        .await
        .map_err(|e| CliError::new(Code::Internal, "the coordinator stopped", e.to_string(), "see the log; restarting resumes the job"))?;
    let summary = finished.to_json(None);
    audit.event(
        job.id,
        &AuditEvent::JobFinished(Box::new(finished.summary.clone())),
    );
    if audit.failed.load(std::sync::atomic::Ordering::Relaxed) {
        out.note(&out.red("some audit records could not be written: see the errors above and run `tensorguard audit verify`"));
    }
    finished.record(&store, None).map_err(|e| {
        CliError::new(
            Code::Store,
            "cannot record the job's end",
            e.to_string(),
            "check disk space and permissions; restarting resumes the job",
        )
    })?;
    if json {
        out.json_value(&summary);
    } else {
        let s = &finished.summary;
        out.line(&format!(
            "job {} {}: {} of {} rounds committed, accuracy {:.4}",
            job.id,
            s.status.as_str(),
            s.rounds_committed,
            s.rounds,
            s.final_accuracy.unwrap_or(f64::NAN)
        ));
    }
    Ok(())
}

/// The node's audit log, signed by its audit signer.
fn open_audit(
    data_dir: &Path,
    identity: &tg_trust::IdentityKey,
    metrics: std::sync::Arc<tg_metrics::Metrics>,
) -> Result<std::sync::Arc<NodeAudit>, CliError> {
    let pass = crate::keys::passphrase()?;
    let ring = crate::keys::keyring(data_dir)?;
    let signer = crate::keys::audit_signer_with(&ring, &pass, identity)?;
    let log = tg_trust::audit::AuditLog::open(
        &crate::keys::audit_log_path(data_dir),
        signer,
        crate::keys::now_secs(),
    )
    .map_err(crate::errors::from_trust)?;
    Ok(std::sync::Arc::new(NodeAudit::new(log, Some(metrics))))
}

/// `tensorguard enroll create`: a one-time token for one agent.
pub fn enroll_create(
    ttl: std::time::Duration,
    data_dir: &Path,
    out: &Output,
) -> Result<(), CliError> {
    let store = Store::open(data_dir).map_err(|e| from_store(e, data_dir))?;
    let mut raw = [0u8; 24];
    crate::errors::os_random(&mut raw)?;
    let token = format!("tg1-{}", hex::encode(raw));
    store
        .add_enrollment_token(&token, ttl.as_millis() as i64)
        .map_err(|e| from_store(e, data_dir))?;
    if out.json {
        out.json_value(&serde_json::json!({"token": token, "expires_in_s": ttl.as_secs()}));
    } else {
        out.line(&token);
        out.note(&format!(
            "one-time enrollment token, valid for {}; give it to one agent: tensorguard agent start --enroll TOKEN …",
            humantime::format_duration(ttl)
        ));
    }
    Ok(())
}
