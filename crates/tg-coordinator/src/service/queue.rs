//! The coordinator as a service: jobs from the command line or the REST
//! API, run one at a time from a bounded queue; stop requests; honest
//! key-provider connection tests.
//!
//! Design decision: the API only *asks* (queue a job, stop a job, test a
//! provider) through [`crate::api::Operations`]; this module decides what
//! a job file means and owns the queue. A stop is a flag the
//! round loop reads between rounds, so a round in progress is always
//! finished and recorded.

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tg_store::Store;
use tg_types::JobId;
use tg_types::record::JobStatus;
use tokio::sync::mpsc;

use super::audit::NodeAudit;
use super::jobfile::{self, JobFile};
use crate::StopSignal;
use crate::admission::AuditSink;
use crate::api::{
    JobDefaults, KeyProvider, OperationError, Operations, ProviderCheck, SubmittedJob,
};

/// How many key records the node's local keystore holds (or why it cannot
/// be read): the one fact a connection test needs from the keystore.
pub type LocalKeys = Box<dyn Fn() -> Result<usize, String> + Send + Sync>;

/// Jobs that may wait behind the running one.
pub const QUEUE_CAPACITY: usize = 8;

/// A job waiting to run, with its stop flag.
pub struct Queued {
    /// The job.
    pub job: JobFile,
    /// Set to stop it (read between rounds).
    pub stop: StopSignal,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Running,
}

/// The queue and the jobs in it, shared by the API and the runner.
pub struct CoordinatorOps {
    queue: mpsc::Sender<Queued>,
    jobs: Mutex<HashMap<JobId, (Phase, StopSignal)>>,
    store: Mutex<Store>,
    data_dir: PathBuf,
    local_keys: LocalKeys,
    audit: Arc<NodeAudit>,
    intake: Intake,
}

/// How a coordinator process takes jobs.
#[derive(Clone, Copy, Debug)]
pub struct Intake {
    /// False for `coordinator start --job` without `--serve`: that process
    /// ends with its job, so a queued job would never run.
    pub accepts_jobs: bool,
    /// `--allow-simulated`: test jobs (simulated noise) may be queued.
    pub allow_simulated: bool,
}

impl CoordinatorOps {
    /// The queue behind `queue`, over the node's store and audit log.
    pub fn new(
        queue: mpsc::Sender<Queued>,
        store: Store,
        data_dir: &Path,
        local_keys: LocalKeys,
        audit: Arc<NodeAudit>,
        intake: Intake,
    ) -> Self {
        Self {
            queue,
            jobs: Mutex::new(HashMap::new()),
            store: Mutex::new(store),
            data_dir: data_dir.to_owned(),
            local_keys,
            audit,
            intake,
        }
    }

    /// Queues a parsed job; refuses one that already ran or is queued.
    pub fn enqueue(&self, job: JobFile) -> Result<SubmittedJob, OperationError> {
        let id = job.id;
        let earlier = self
            .store
            .lock()
            .ok()
            .and_then(|s| s.find_job(&id.to_string()).ok())
            .filter(|row| row.id == id.to_string())
            .filter(|row| !matches!(row.status, JobStatus::Interrupted | JobStatus::Running));
        if let Some(row) = earlier {
            return Err(OperationError::Conflict(format!(
                "job {id} is already {}; a finished job never runs twice — change the job file's `id` to train again",
                row.status.as_str()
            )));
        }
        let mut jobs = self
            .jobs
            .lock()
            .map_err(|_| OperationError::Unavailable("job table lock poisoned".into()))?;
        if jobs.contains_key(&id) {
            return Err(OperationError::Conflict(format!(
                "job {id} is already queued or running here"
            )));
        }
        let stop = StopSignal::default();
        let ahead = jobs.len();
        self.queue
            .try_send(Queued {
                job,
                stop: stop.clone(),
            })
            .map_err(|_| {
                OperationError::Unavailable(format!(
                    "the job queue is full ({QUEUE_CAPACITY} waiting); retry when a job finishes"
                ))
            })?;
        jobs.insert(id, (Phase::Queued, stop));
        Ok(SubmittedJob {
            job: id.to_string(),
            queued_behind: ahead,
        })
    }

    /// A job run from the command line: tracked so the API can stop it.
    pub fn track(&self, job: JobId) -> StopSignal {
        let stop = StopSignal::default();
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.insert(job, (Phase::Running, stop.clone()));
        }
        stop
    }

    /// The runner took `job`; false if it was stopped while queued.
    pub fn starting(&self, job: JobId) -> bool {
        let Ok(mut jobs) = self.jobs.lock() else {
            return false;
        };
        match jobs.get_mut(&job) {
            Some((_, stop)) if stop.is_stopped() => {
                jobs.remove(&job);
                false
            }
            Some(entry) => {
                entry.0 = Phase::Running;
                true
            }
            None => true,
        }
    }

    /// The runner is done with `job`.
    pub fn finished(&self, job: JobId) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.remove(&job);
        }
    }
}

impl Operations for CoordinatorOps {
    fn submit_job(
        &self,
        job_file: &str,
        defaults: &JobDefaults,
    ) -> Result<SubmittedJob, OperationError> {
        if !self.intake.accepts_jobs {
            return Err(OperationError::Unavailable(
                "this coordinator runs one job and exits (started without --serve); start it with `coordinator start --serve --api …` to take jobs from the API".into(),
            ));
        }
        let effective = jobfile::with_defaults(job_file, defaults);
        let job = jobfile::parse("(request body)", effective.as_bytes())
            .map_err(|e| OperationError::Invalid(e.coded()))?;
        // A path in a request body would let an API caller make the
        // coordinator read (and send to its agents) any file on its host.
        if let Some(path) = &job.initial_model {
            return Err(OperationError::Invalid(format!(
                "error[E020]: [model] initial = {:?} in a job sent through the API — the API never reads files on the coordinator's host — start this job with `tensorguard coordinator start --job FILE`, whose operator names the file",
                path.display()
            )));
        }
        if job.job.simulated_noise_seed().is_some() && !self.intake.allow_simulated {
            return Err(OperationError::Invalid(
                "error[E020]: the job sets privacy.simulated_noise_seed — its DP noise would come from a public seed, which anyone can remove — remove it; only a coordinator started with --allow-simulated runs such a test job".into(),
            ));
        }
        self.enqueue(job)
    }

    fn stop_job(&self, job: &str) -> Result<(), OperationError> {
        let id: JobId = job
            .parse()
            .map_err(|_| OperationError::NotFound(format!("no job `{job}`")))?;
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| OperationError::Unavailable("job table lock poisoned".into()))?;
        let Some((phase, stop)) = jobs.get(&id) else {
            let known = self
                .store
                .lock()
                .ok()
                .and_then(|s| s.find_job(&id.to_string()).ok());
            return Err(match known {
                Some(row) => OperationError::Conflict(format!(
                    "job {id} is {}, not queued or running on this coordinator",
                    row.status.as_str()
                )),
                None => OperationError::NotFound(format!("no job {id}")),
            });
        };
        let phase = if *phase == Phase::Running {
            "running"
        } else {
            "queued"
        };
        self.audit
            .record_action(
                tg_trust::audit::kind::JOB_STOP_REQUESTED,
                Some(id),
                serde_json::json!({"phase": phase}),
            )
            .map_err(|e| {
                OperationError::Unavailable(format!(
                    "not stopped: the request could not be audited ({e})"
                ))
            })?;
        stop.stop();
        Ok(())
    }

    fn test_key_provider(&self, config: &KeyProvider) -> ProviderCheck {
        probe(config, &self.data_dir, &self.local_keys)
    }
}

fn check(status: &str, detail: impl Into<String>) -> ProviderCheck {
    ProviderCheck {
        status: status.to_owned(),
        detail: detail.into(),
    }
}

/// Tries a TLS port: DNS, then TCP within 3 s. It checks reachability only.
fn reach(host: &str) -> Result<String, String> {
    let addrs: Vec<_> = (host, 443)
        .to_socket_addrs()
        .map_err(|e| format!("DNS lookup of {host} failed: {e}"))?
        .collect();
    let mut last = format!("{host} resolved to no address");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
            Ok(_) => return Ok(format!("TCP connection to {host}:443 ({a}) succeeded")),
            Err(e) => last = format!("TCP connection to {host}:443 ({a}) failed: {e}"),
        }
    }
    Err(last)
}

/// What a connection test finds, stated plainly.
pub fn probe(config: &KeyProvider, data_dir: &Path, local_keys: &LocalKeys) -> ProviderCheck {
    let cloud = |host: String, name: &str| match reach(&host) {
        Ok(detail) => check(
            "reachable",
            format!(
                "{detail}. Credentials were not checked and no key was used: TensorGuard stores this {name} configuration but does not sign with cloud KMS keys yet; signing keys stay in the local keystore or PKCS#11."
            ),
        ),
        Err(detail) => check("unreachable", detail),
    };
    match config {
        KeyProvider::Local {} => match local_keys() {
            Ok(n) => check(
                "ok",
                format!(
                    "local keystore at {} holds {n} key record(s)",
                    data_dir.join("keys").display()
                ),
            ),
            Err(e) => check("misconfigured", e),
        },
        KeyProvider::Pkcs11 {
            module,
            token_label,
        } => {
            let path = Path::new(module);
            if !path.is_file() {
                return check(
                    "misconfigured",
                    format!("no PKCS#11 module at {module} (e.g. /usr/lib/softhsm/libsofthsm2.so)"),
                );
            }
            match tg_trust::pkcs11::probe_token(path, token_label) {
                Ok(token) => check(
                    "ok",
                    format!(
                        "module loaded; token '{token_label}' found: {token} (not logged in: no PIN was used)"
                    ),
                ),
                Err(e) => check("unreachable", e.to_string()),
            }
        }
        KeyProvider::Aws { region, .. } => cloud(format!("kms.{region}.amazonaws.com"), "AWS KMS"),
        KeyProvider::Azure { vault_url, .. } => {
            let host = vault_url
                .trim_start_matches("https://")
                .split(['/', ':'])
                .next()
                .unwrap_or_default()
                .to_owned();
            cloud(host, "Azure Key Vault")
        }
        KeyProvider::Gcp { .. } => cloud("cloudkms.googleapis.com".into(), "Google Cloud KMS"),
    }
}
