//! `tensorguard coordinator start --job JOB.toml`: flags, the API and
//! metrics server, the job queue's loop, and what is printed. The job's
//! lifecycle is `tg_coordinator::service::job`.

use std::path::Path;

use tg_coordinator::service::ServiceError;
use tg_coordinator::service::audit::NodeAudit;
use tg_coordinator::service::job::{self, Node, Report};
use tg_coordinator::service::jobfile::{self, JobFile};
use tg_coordinator::service::queue::{self as service, CoordinatorOps, Intake, Queued};
use tg_store::Store;
use tg_types::record::{RoundRecord, RoundStatus};

use crate::cli::CoordinatorStartArgs;
use crate::errors::{Code, UserError, from_model, from_store};
use crate::output::Output;
/// Runs (or resumes) the job of a job file until it finishes; with
/// `--serve`, then keeps running jobs submitted through the REST API.
pub fn start(args: &CoordinatorStartArgs, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    if args.serve && args.api.is_none() {
        return Err(crate::errors::invalid(
            "--serve without --api",
            "a serving coordinator takes its jobs through the REST API",
            "add --api 127.0.0.1:9100",
        ));
    }
    let first = match &args.job {
        Some(path) => Some(jobfile::load(path).map_err(crate::errors::from_job)?),
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

async fn serve(
    first: Option<JobFile>,
    args: &CoordinatorStartArgs,
    key: tg_trust::IdentityKey,
    data_dir: &Path,
    out: &Output,
) -> Result<(), UserError> {
    let open = || Store::open(data_dir).map_err(|e| from_store(e, data_dir));
    let metrics = tg_metrics::Metrics::new("coordinator");
    let disk_dir = data_dir.to_owned();
    metrics.attach_disk(move || super::disk_space(&disk_dir));
    let shared = Node {
        audit: open_audit(data_dir, &key, metrics.clone())?,
        key,
        data_dir: data_dir.to_owned(),
        metrics,
        fleet: Default::default(),
    };
    let (queue, mut jobs) = tokio::sync::mpsc::channel(service::QUEUE_CAPACITY);
    let keys_dir = data_dir.to_owned();
    let ops = std::sync::Arc::new(CoordinatorOps::new(
        queue,
        open()?,
        data_dir,
        Box::new(move || {
            crate::keys::keyring(&keys_dir)
                .map(|ring| ring.records().len())
                .map_err(|e| e.to_string())
        }),
        shared.audit.clone(),
        Intake {
            accepts_jobs: args.serve,
            allow_simulated: args.allow_simulated,
        },
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
        let result = run(job, args, out, &shared, stop).await;
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
        if let Err(e) = run(job, args, out, &shared, stop).await {
            out.note(&e.to_string());
        }
        ops.finished(id);
    }
    Ok(())
}

/// What the job's lifecycle reports, printed for a person or as JSON lines.
struct Printed<'a>(&'a Output);

impl Report for Printed<'_> {
    fn note(&self, line: &str) {
        self.0.note(line);
    }

    fn alert(&self, line: &str) {
        self.0.note(&self.0.red(line));
    }

    fn round(&self, r: &RoundRecord) {
        if self.0.json {
            eprintln!(
                "{}",
                serde_json::json!({"event": "round", "round": r.round, "status": r.status.as_str(), "participants": r.participants, "accuracy": r.accuracy, "model_sha256": r.model_sha256})
            );
        } else if r.status == RoundStatus::Committed {
            eprintln!(
                "round {} committed · {} of {} agents · accuracy {:.4}",
                r.round,
                r.participants,
                r.selected,
                r.accuracy.unwrap_or(f64::NAN)
            );
        } else {
            eprintln!(
                "round {} failed · {}",
                r.round,
                r.reason.as_deref().unwrap_or("")
            );
        }
    }
}

async fn run(
    job: JobFile,
    args: &CoordinatorStartArgs,
    out: &Output,
    node: &Node,
    stop: tg_coordinator::StopSignal,
) -> Result<(), UserError> {
    let options = job::Options {
        listen: args.listen.clone(),
        no_mdns: args.no_mdns,
        allow_simulated: args.allow_simulated,
        tee_root: args.tee_root.clone(),
    };
    let id = job.id;
    let Some(finished) = job::run(job, &options, node, &Printed(out), stop)
        .await
        .map_err(|e| service_error(e, &node.data_dir))?
    else {
        return Ok(());
    };
    if out.json {
        out.json_value(&finished.to_json(None));
    } else {
        let s = &finished.summary;
        out.line(&format!(
            "job {id} {}: {} of {} rounds committed, accuracy {:.4}",
            s.status.as_str(),
            s.rounds_committed,
            s.rounds,
            s.final_accuracy.unwrap_or(f64::NAN)
        ));
    }
    Ok(())
}

/// The job's error, with its code and what to do.
fn service_error(e: ServiceError, data_dir: &Path) -> UserError {
    match e {
        ServiceError::AlreadyFinished { job, status } => UserError::new(
            Code::JobFinished,
            format!("job {job} is already {}", status.as_str()),
            "a finished job is never run twice (its model and privacy ledger are final)",
            "to train again, set a new `id` in the job file (or change it), or use another --data-dir",
        ),
        ServiceError::SimulatedNotAllowed { job } => UserError::new(
            Code::InvalidValue,
            format!("job {job} sets privacy.simulated_noise_seed"),
            "its DP noise would come from a public seed, which anyone can remove: the job would not be private",
            "remove simulated_noise_seed for a real job; to test reproducibility, start the coordinator with --allow-simulated",
        ),
        ServiceError::NoTee { job, why } => UserError::new(
            Code::NoTee,
            format!("job {job} asks for an attested aggregator and this machine cannot attest"),
            why,
            "run the coordinator inside an SEV-SNP or TDX VM (or an SGX enclave); for testing only, start it with --allow-simulated (the aggregator is then labelled UNTRUSTED everywhere), or remove attested_aggregator from the job",
        ),
        ServiceError::Plan(e) => crate::errors::from_job(e),
        ServiceError::Model(e) => from_model(e),
        ServiceError::Store(e) => from_store(e, data_dir),
        ServiceError::Network(why) => UserError::new(
            Code::Network,
            "cannot start the network",
            why,
            "check the listen addresses (is the port in use?)",
        ),
        ServiceError::TooFewAgents {
            joined,
            planned,
            quorum,
            waited,
        } => UserError::new(
            Code::QuorumTooLarge,
            format!("only {joined} of {planned} agents joined within {waited:?}"),
            format!("the job's quorum is {quorum}"),
            "start more agents (`tensorguard agent start --coordinator ADDR`), or raise deadlines.join_secs",
        ),
        ServiceError::InitialModel { path, why } => UserError::new(
            Code::DatasetUnsuitable,
            format!("the job's initial model {} cannot be used", path.display()),
            why,
            "point [model] initial at a safetensors file of finite f32, f16 or bf16 tensors (tensorguard.save_model or safetensors.torch.save_file write one); a relative path is relative to the job file",
        ),
        ServiceError::Record(why) => UserError::new(
            Code::Store,
            "cannot record the job's end",
            why,
            "check disk space and permissions; restarting resumes the job",
        ),
        other => UserError::new(
            Code::Internal,
            "the coordinator stopped",
            other.to_string(),
            "see the log; restarting resumes the job",
        ),
    }
}

/// The node's audit log, signed by its audit signer.
fn open_audit(
    data_dir: &Path,
    identity: &tg_trust::IdentityKey,
    metrics: std::sync::Arc<tg_metrics::Metrics>,
) -> Result<std::sync::Arc<NodeAudit>, UserError> {
    let pass = crate::keys::passphrase()?;
    let ring = crate::keys::keyring(data_dir)?;
    let log = tg_trust::node::open_audit_as(data_dir, &ring, &pass, identity)
        .map_err(crate::errors::from_trust)?;
    Ok(std::sync::Arc::new(NodeAudit::new(log, Some(metrics))))
}

/// `tensorguard enroll create`: a one-time token for one agent.
pub fn enroll_create(
    ttl: std::time::Duration,
    data_dir: &Path,
    out: &Output,
) -> Result<(), UserError> {
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
