//! One fleet job from its file to its recorded end: refusals, the
//! coordinator's held-out data and plan, the network node, admission,
//! waiting for agents, the rounds ([`crate::runner::JobRun`]) and the audit
//! records around them.

use std::sync::Arc;
use std::time::Duration;

use tg_model::net::ModelShape;
use tg_model::{init_parameters, load_dataset};
use tg_net::Multiaddr;
use tg_proto::Offer;
use tg_store::Store;
use tg_trust::audit::AuditEvent;
use tg_types::record::{JobStatus, RoundRecord};

use super::ServiceError;
use super::audit::{self, NodeAudit};
use super::jobfile::JobFile;
use crate::StopSignal;
use crate::admission::AttestationGate;
use crate::net::{Admission, NetTransport};
use crate::runner::{Finished, JobRun, JobSummary};

/// What every job of one coordinator process shares.
pub struct Node {
    /// The node's identity (its libp2p and frame-signing key).
    pub key: tg_trust::IdentityKey,
    /// Store, audit log and the `coordinator.addrs` file live here.
    pub data_dir: std::path::PathBuf,
    /// The process's metrics.
    pub metrics: Arc<tg_metrics::Metrics>,
    /// The node's audit log.
    pub audit: Arc<NodeAudit>,
    /// The agents the dashboard shows.
    pub fleet: crate::fleet_view::FleetView,
}

/// The operator's flags that change how a job runs.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Listen here instead of the job file's addresses (when not empty).
    pub listen: Vec<Multiaddr>,
    /// Turn LAN discovery off whatever the job file says.
    pub no_mdns: bool,
    /// Testing only: admit simulated attestation and run simulated noise.
    pub allow_simulated: bool,
    /// Where TEE interfaces are looked for (`None`: `/`).
    pub tee_root: Option<std::path::PathBuf>,
}

/// Where a running job reports what a person should see.
pub trait Report: Sync {
    /// A progress line.
    fn note(&self, line: &str);
    /// A line that must stand out (testing modes, audit failures).
    fn alert(&self, line: &str);
    /// A round ended (committed or failed).
    fn round(&self, record: &RoundRecord);
}

/// Starts a network node for `key`; its event loop runs on the current
/// tokio runtime.
pub fn start_node(
    key: &tg_trust::IdentityKey,
    config: tg_net::Config,
) -> Result<(tg_net::Client, tokio::sync::mpsc::Receiver<tg_net::Event>), ServiceError> {
    let (client, events, event_loop) = tg_net::new(key.signing_key().to_bytes(), config)
        .map_err(|e| ServiceError::Network(e.to_string()))?;
    tokio::spawn(event_loop.run());
    Ok((client, events))
}

/// The model a job starts from, and what the coordinator knows of the data.
struct Model {
    initial: tg_types::Parameters,
    evaluator: Box<dyn crate::Evaluator>,
    /// The coordinator's count of training examples (0: unknown).
    train_examples: usize,
    schema: Option<tg_proto::DataSchema>,
}

/// A built-in model: the coordinator holds the dataset's held-out split,
/// which gates every round, and declares the data's schema.
fn builtin_model(what: &tg_types::spec::JobSpec) -> Result<Model, ServiceError> {
    let split = load_dataset(&what.dataset)?;
    let shape = ModelShape::for_dataset(what.model, what.hidden, &split.train)?;
    Ok(Model {
        initial: init_parameters(&shape, what.seed)?,
        schema: Some(tg_proto::DataSchema {
            features: split.train.num_features() as u32,
            classes: split.train.num_classes() as u32,
            dtype: tg_proto::Dtype::F32,
        }),
        train_examples: split.train.len(),
        evaluator: Box::new(crate::plan::HeldOut::new(shape, &split.test)?),
    })
}

/// Largest initial model file read (1 GiB: a quarter-billion f32 values,
/// whose updates agents stream in chunks).
const MAX_INITIAL_MODEL_BYTES: u64 = 1 << 30;

/// The operator's model, from a safetensors file: the agents bring its
/// code and their data, so the coordinator holds no held-out data (every
/// finite aggregate commits) and declares no schema.
fn operator_model(path: &std::path::Path) -> Result<Model, ServiceError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |why: String| ServiceError::InitialModel {
        path: path.to_owned(),
        why,
    };
    // Opened once, without blocking (a FIFO), and checked through the open
    // handle: what is read is what was checked, of bounded size.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > MAX_INITIAL_MODEL_BYTES {
        return Err(bad(format!(
            "{} bytes, more than the {MAX_INITIAL_MODEL_BYTES} a job's model may have",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_INITIAL_MODEL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_INITIAL_MODEL_BYTES {
        return Err(bad("the file grew past the limit while it was read".into()));
    }
    let initial = tg_types::Parameters::from_safetensors(&bytes).map_err(|e| {
        bad(format!(
            "not a safetensors model TensorGuard can train: {e}"
        ))
    })?;
    if initial.num_values() == 0 {
        return Err(bad("the model has no values".into()));
    }
    if let Some(t) = initial
        .tensors()
        .iter()
        .find(|t| t.data.iter().any(|v| !v.is_finite()))
    {
        return Err(bad(format!(
            "tensor `{}` holds NaN or infinite values",
            t.name
        )));
    }
    Ok(Model {
        initial,
        evaluator: Box::new(crate::plan::NoHeldOut),
        train_examples: 0,
        schema: None,
    })
}

/// Runs (or resumes) `job` until it ends; `Ok(None)` when an operator
/// stopped it before round 1 (recorded in the audit log).
pub async fn run(
    job: JobFile,
    options: &Options,
    node: &Node,
    report: &dyn Report,
    stop: StopSignal,
) -> Result<Option<Finished>, ServiceError> {
    let data_dir = node.data_dir.as_path();
    let mut store = Store::open(data_dir)?;
    let finished = store
        .find_job(&job.id.to_string())
        .ok()
        .filter(|row| row.status != JobStatus::Interrupted);
    if let Some(row) = finished {
        return Err(ServiceError::AlreadyFinished {
            job: job.id,
            status: row.status,
        });
    }
    let admissions = Store::open(data_dir)?;
    // A simulated (seeded) noise source is for testing: refused unless the
    // operator says so, and labelled in every output and the audit log.
    let simulation = job.job.simulated_noise_seed().map(tg_job::simulation_label);
    if let Some(label) = &simulation {
        if !options.allow_simulated {
            return Err(ServiceError::SimulatedNotAllowed { job: job.id });
        }
        report.alert(label);
    }

    let what = job.job.spec();
    let model = match &job.initial_model {
        // A large file is read and checked off the async threads.
        Some(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || operator_model(&path))
                .await
                .map_err(|e| ServiceError::Record(format!("reading the initial model: {e}")))??
        }
        None => builtin_model(what)?,
    };
    let Model {
        initial,
        evaluator,
        train_examples,
        schema,
    } = model;
    // The job's numbers (noise, encoding, weights) from the plan, as in the demo.
    let plan = job.job.plan(&tg_job::Facts {
        num_parameters: initial.num_values(),
        train_examples,
        client_sizes: None,
    })?;
    let spec = plan.spec.clone();

    let listen = if options.listen.is_empty() {
        job.listen.clone()
    } else {
        options.listen.clone()
    };
    let expected = listen.len();
    let mut net = tg_net::Config::new(tg_net::Role::Coordinator, listen);
    net.mdns = job.mdns && !options.no_mdns;
    net.relays.clone_from(&job.relays);
    net.request_timeout = job.deadlines.stage.max(Duration::from_secs(10));
    // What an admitted peer can make this node reserve scales with the model.
    net.max_frame_bytes = tg_proto::max_agent_frame(initial.num_values());
    let (client, mut events) = start_node(&node.key, net)?;
    let me = client.local_peer_id();

    // Report where agents can reach us before serving anyone.
    let mut addrs = Vec::new();
    while addrs.len() < expected.max(1) {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Some(tg_net::Event::Listening(a))) => addrs.push(format!("{a}/p2p/{me}")),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let _ = std::fs::write(data_dir.join("coordinator.addrs"), addrs.join("\n") + "\n");
    for a in &addrs {
        report.note(&format!("listening on {a}"));
    }
    report.note(&format!("job {} · peer id {me}", job.id));

    let metrics = node.metrics.clone();
    metrics.job(Some((
        spec.clients as usize,
        spec.privacy.map(|p| p.target_epsilon.get()),
    )));
    // Whatever happens below, the gauges say no job runs once we return.
    struct Ended(Arc<tg_metrics::Metrics>);
    impl Drop for Ended {
        fn drop(&mut self) {
            self.0.job(None);
        }
    }
    let _ended = Ended(metrics.clone());
    // An attested aggregator: a session key held here, and evidence binding
    // it, offered to agents (who verify it before they send anything).
    let tee = if spec.attested_aggregator {
        let root = options
            .tee_root
            .clone()
            .unwrap_or_else(|| std::path::PathBuf::from("/"));
        let a = super::aggregator::attest(
            job.id,
            node.key.signing_key(),
            &me,
            &root,
            options.allow_simulated,
        )?;
        if a.simulated {
            report.alert(&a.label);
        } else {
            report.note(&a.label);
        }
        Some(a)
    } else {
        None
    };
    // Every output names a simulation: simulated noise, a simulated TEE.
    let simulation = match (simulation, tee.as_ref().filter(|a| a.simulated)) {
        (Some(noise), Some(a)) => Some(format!("{noise}; {}", a.label)),
        (None, Some(a)) => Some(a.label.clone()),
        (noise, None) => noise,
    };
    let offer = Offer {
        job: job.id,
        model: spec.model,
        hidden: spec.hidden as u32,
        train: spec.train,
        privacy: spec.privacy,
        rounds: spec.rounds,
        enrollment_required: job.enrollment && job.allowed.is_empty(),
        attestation_nonce: None,
        schema,
        custom_model: job.initial_model.is_some(),
        aggregator: tee.as_ref().map(|a| a.offer.clone()),
    };
    let audit = node.audit.clone();
    let prg = tg_secagg::crypto::Prg::for_this_cpu();
    let created = audit::job_created(
        &spec,
        job.attestation.as_ref(),
        options.allow_simulated,
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
        node.key.signing_key().clone(),
        offer,
        admission,
        admissions,
        metrics.clone(),
    )
    .with_audit(audit.clone())
    .with_fleet_view(node.fleet.clone());
    if let Some(policy) = &job.attestation {
        report.note(&format!(
            "attestation required: {}",
            serde_json::to_string(policy).unwrap_or_default()
        ));
        transport = transport.with_attestation(AttestationGate {
            policy: policy.clone(),
            anchors: tg_attest::TrustAnchors::default(),
            allow_simulated: options.allow_simulated,
        });
    }
    let attested = transport.attestations();
    let planned = spec.clients as usize;
    report.note(&format!(
        "waiting for {planned} agents (up to {:?})",
        job.deadlines.join
    ));
    let stop_poll = stop.clone();
    let joined = tokio::select! {
        n = transport.wait_for_agents(planned, job.deadlines.join) => n,
        () = async move {
            while !stop_poll.is_stopped() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        } => {
            let stopped = JobSummary::before_first_round(
                job.id.to_string(),
                "fleet".into(),
                JobStatus::Stopped,
                "stopped by an operator before round 1, while waiting for agents".into(),
                spec.rounds,
                simulation.clone(),
            );
            audit.event(job.id, &AuditEvent::JobFinished(Box::new(stopped)));
            report.note(&format!("job {} stopped by an operator while waiting for agents; no round ran", job.id));
            return Ok(None);
        }
    };
    if joined < spec.min_clients as usize {
        return Err(ServiceError::TooFewAgents {
            joined,
            planned,
            quorum: spec.min_clients,
            waited: job.deadlines.join,
        });
    }
    report.note(&format!("{joined} agents joined; starting"));

    let run = JobRun {
        id: job.id,
        kind: "fleet",
        plan: &plan,
        stages: crate::plan::Stages {
            train: job.deadlines.train,
            stage: job.deadlines.stage,
        },
        identities: Default::default(),
        prg,
        metrics: Some(metrics.clone()),
        stop: Some(stop),
        strategy: None,
        sealing: tee.as_ref().map(|a| a.secret.clone()),
    };
    let quorum = spec.min_clients;
    let round_audit = audit.clone();
    let finished = run
        .run(transport, evaluator, &mut store, initial, |r| {
            let attested = attested.lock().map(|a| a.clone()).unwrap_or_default();
            round_audit.event(
                job.id,
                &AuditEvent::Round(audit::round(r, quorum, &attested)),
            );
            report.round(r);
        })
        .await?;
    let mut finished = finished;
    if finished.summary.simulation.is_none() {
        finished.summary.simulation.clone_from(&simulation);
    }
    audit.event(
        job.id,
        &AuditEvent::JobFinished(Box::new(finished.summary.clone())),
    );
    if audit.failed.load(std::sync::atomic::Ordering::Relaxed) {
        report.alert("some audit records could not be written: see the errors above and run `tensorguard audit verify`");
    }
    finished
        .record(&store, None)
        .map_err(|e| ServiceError::Record(e.to_string()))?;
    Ok(Some(finished))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tg_types::{NamedTensor, Parameters};

    fn model(values: Vec<f32>) -> Vec<u8> {
        Parameters::new(vec![NamedTensor {
            name: "w".into(),
            shape: vec![values.len()],
            data: values,
        }])
        .unwrap()
        .to_safetensors()
        .unwrap()
    }

    #[test]
    fn an_operator_model_is_a_regular_file_of_finite_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("m.safetensors");
        std::fs::write(&good, model(vec![0.5, -1.0])).unwrap();
        let m = operator_model(&good).unwrap();
        assert_eq!(m.initial.num_values(), 2);
        assert!(m.schema.is_none() && m.train_examples == 0);

        let why = |p: &std::path::Path| match operator_model(p) {
            Err(ServiceError::InitialModel { why, .. }) => why,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("{} accepted", p.display()),
        };
        let nan = dir.path().join("nan.safetensors");
        std::fs::write(&nan, model(vec![0.5, f32::NAN])).unwrap();
        assert!(why(&nan).contains("NaN"));
        let truncated = dir.path().join("cut.safetensors");
        let bytes = model(vec![1.0; 8]);
        std::fs::write(&truncated, &bytes[..bytes.len() - 3]).unwrap();
        assert!(why(&truncated).contains("safetensors"));
        // A device or a directory named by a job sent through the API is
        // never read.
        assert!(why(std::path::Path::new("/dev/zero")).contains("regular file"));
        assert!(why(dir.path()).contains("regular file"));
        // A FIFO (a reader would block forever) and a link to a device.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            assert!(why(&fifo).contains("regular file"));
        }
        let link = dir.path().join("link.safetensors");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(why(&link).contains("regular file"));
        assert!(!why(&dir.path().join("missing")).is_empty());
    }
}
