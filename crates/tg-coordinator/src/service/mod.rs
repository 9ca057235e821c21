//! The coordinator as a service: a fleet job's whole lifecycle, the job
//! file that describes it, the queue the REST API feeds, and the audit
//! records a job leaves.
//!
//! Design decision: everything a fleet job *decides* lives here — what a
//! job file means, which jobs are refused (already finished, simulated
//! noise without `--allow-simulated`, too few agents), what is offered to
//! agents and audited — so the binary only maps flags to [`job::Options`],
//! prints what [`job::Report`] is told, and maps [`ServiceError`] to codes.
//! The demo and the fleet share the rounds themselves through
//! [`crate::runner::JobRun`].

pub mod aggregator;
pub mod audit;
pub mod job;
pub mod jobfile;
pub mod queue;

use std::time::Duration;

use tg_types::JobId;
use tg_types::record::JobStatus;

/// Why a fleet job could not run to its end. A failed *round* is not an
/// error: it is recorded and the job goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The job already ran here; a finished job never runs twice.
    #[error("job {job} is already {}", status.as_str())]
    AlreadyFinished {
        /// The job.
        job: JobId,
        /// How it ended.
        status: JobStatus,
    },
    /// The job asks for simulated noise and the operator did not allow it.
    #[error("job {job} sets privacy.simulated_noise_seed")]
    SimulatedNotAllowed {
        /// The job.
        job: JobId,
    },
    /// The job cannot be planned on the coordinator's data.
    #[error(transparent)]
    Plan(#[from] tg_job::JobError),
    /// The coordinator's data or model failed.
    #[error(transparent)]
    Model(#[from] tg_model::ModelError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] tg_store::StoreError),
    /// The network node could not start.
    #[error("cannot start the network: {0}")]
    Network(String),
    /// Fewer agents than the quorum joined in time.
    #[error("only {joined} of {planned} agents joined within {waited:?}")]
    TooFewAgents {
        /// Agents that joined.
        joined: usize,
        /// Agents the job asked for.
        planned: usize,
        /// The job's quorum.
        quorum: u32,
        /// How long the coordinator waited.
        waited: Duration,
    },
    /// The rounds stopped on an error (restarting resumes the job).
    #[error(transparent)]
    Run(#[from] crate::CoordinatorError),
    /// The job's `[model] initial` file cannot be used.
    #[error("the initial model {path}: {why}")]
    InitialModel {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The job's end could not be recorded.
    #[error("cannot record the job's end: {0}")]
    Record(String),
    /// The job asks for an attested aggregator and this machine cannot
    /// attest (no TEE, and simulation not allowed).
    #[error("job {job} asks for an attested aggregator: {why}")]
    NoTee {
        /// The job.
        job: JobId,
        /// What is missing.
        why: String,
    },
}
