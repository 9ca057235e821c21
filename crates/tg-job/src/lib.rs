//! One job description — a TOML job file, the demo's flags, or the API's
//! `POST /jobs` body — becomes one validated, calibrated [`JobSpec`].
//!
//! Design decision: every way of writing a job fills the same three
//! *sections* ([`JobSection`], [`PrivacySection`], [`SecureSection`]: every
//! key optional, exactly the keys of the job file's `[job]`, `[privacy]` and
//! `[secure_aggregation]` tables), and one resolver turns them into a job in
//! two phases:
//!
//! 1. [`Job::resolve`] applies the defaults and refuses every value or
//!    combination that could never run. It needs no data, so a job file is
//!    refused when it is read, through the CLI, a fleet and the API alike,
//!    with the same [`JobError`].
//! 2. [`Job::plan`] takes the facts only the data can tell (the model's
//!    size, how many examples there are) and calibrates the privacy: the
//!    noise that meets the budget (`noise_multiplier = "auto"`), DP-SGD's
//!    sampling rate, and the distributed-DP encoding.
//!
//! A runner (the in-process simulation or a fleet coordinator) never
//! decides a job's numbers itself; it asks the plan. The crate is pure: no
//! runtime, no network, no tensors.

mod distributed;
mod file;
mod privacy;
mod section;
mod secure;

use std::fmt;

pub use file::{
    AdmissionSection, Deadlines, JobFile, NetworkSection, parse_file, parse_simulation,
};
pub use privacy::{PrivacySection, Setting};
pub use section::{JobSection, defaults};
pub use secure::SecureSection;
use tg_types::spec::JobSpec;

/// What went wrong with a job description, for a person: what, why, and
/// what to do, and the key it concerns when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The offending key, e.g. `clients` or `privacy.clip`.
    pub key: Option<String>,
    /// What happened.
    pub what: String,
    /// Why it cannot run.
    pub why: String,
    /// What to do.
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} — {} — {}", self.what, self.why, self.fix)
    }
}

/// A job description that cannot run. Each variant is one family of the
/// CLI's error codes (named on the variant).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// A value is outside its domain, or settings contradict each other (E020).
    #[error("{0}")]
    Invalid(Problem),
    /// The quorum is larger than the federation (E021).
    #[error("{0}")]
    Quorum(Problem),
    /// A privacy parameter is outside its domain (E060).
    #[error("{0}")]
    PrivacyParam(Problem),
    /// The privacy target cannot be met with these settings (E061).
    #[error("{0}")]
    PrivacyUnreachable(Problem),
    /// The job file is not TOML of the expected shape (E001).
    #[error("{0}")]
    Syntax(Problem),
    /// The job file has a key this version does not know (E003).
    #[error("{0}")]
    UnknownKey(Problem),
}

impl JobError {
    /// The problem, whatever its family.
    pub fn problem(&self) -> &Problem {
        match self {
            JobError::Invalid(p)
            | JobError::Quorum(p)
            | JobError::PrivacyParam(p)
            | JobError::PrivacyUnreachable(p)
            | JobError::Syntax(p)
            | JobError::UnknownKey(p) => p,
        }
    }

    /// The CLI's code for this family (docs/ERRORS.md), the same through
    /// the CLI, a job file and the API.
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Invalid(_) => "E020",
            JobError::Quorum(_) => "E021",
            JobError::PrivacyParam(_) => "E060",
            JobError::PrivacyUnreachable(_) => "E061",
            JobError::Syntax(_) => "E001",
            JobError::UnknownKey(_) => "E003",
        }
    }

    /// The error as the CLI prints it: `error[E0xx]: what — why — fix`.
    pub fn coded(&self) -> String {
        format!("error[{}]: {}", self.code(), self.problem())
    }

    /// The key the problem concerns, when there is one.
    pub fn key(&self) -> Option<&str> {
        self.problem().key.as_deref()
    }

    fn problem_mut(&mut self) -> &mut Problem {
        match self {
            JobError::Invalid(p)
            | JobError::Quorum(p)
            | JobError::PrivacyParam(p)
            | JobError::PrivacyUnreachable(p)
            | JobError::Syntax(p)
            | JobError::UnknownKey(p) => p,
        }
    }

    /// The same error, naming `key` (unless it already names one).
    #[must_use]
    pub fn at(mut self, key: &str) -> Self {
        let p = self.problem_mut();
        if p.key.is_none() {
            p.key = Some(key.to_owned());
        }
        self
    }
}

/// Result alias of this crate.
pub type Result<T, E = JobError> = std::result::Result<T, E>;

pub(crate) fn problem(
    what: impl Into<String>,
    why: impl Into<String>,
    fix: impl Into<String>,
) -> Problem {
    Problem {
        key: None,
        what: what.into(),
        why: why.into(),
        fix: fix.into(),
    }
}

/// An [`JobError::Invalid`] (E020).
pub(crate) fn invalid(
    what: impl Into<String>,
    why: impl Into<String>,
    fix: impl Into<String>,
) -> JobError {
    JobError::Invalid(problem(what, why, fix))
}

/// A privacy parameter the accountant refuses (E060 or E061).
pub(crate) fn from_privacy(key: &str, e: tg_privacy::PrivacyError) -> JobError {
    match e {
        tg_privacy::PrivacyError::OutOfRange { what, value, range } => {
            JobError::PrivacyParam(problem(
                format!("{what} = {value} is outside {range}"),
                "the accountant is only defined on that range",
                match what {
                    "sampling rate q" => {
                        "use the fraction sampled per step, e.g. 0.01 (1.0 means everyone every step)"
                    }
                    "noise multiplier σ" => "use a positive noise multiplier, e.g. 1.1",
                    "δ" => "use a δ well below 1/population, e.g. 1e-5",
                    _ => "use a value in the stated range (see docs/PRIVACY.md)",
                },
            ))
            .at(key)
        }
        tg_privacy::PrivacyError::Unreachable {
            target_epsilon,
            max_sigma,
            best_epsilon,
        } => JobError::PrivacyUnreachable(problem(
            format!("no noise multiplier up to {max_sigma} reaches ε = {target_epsilon}"),
            format!("even σ = {max_sigma} spends ε = {best_epsilon:.4}"),
            "raise the target ε or δ, lower the sampling rate, or take fewer rounds or steps",
        ))
        .at(key),
        other => JobError::PrivacyParam(problem(
            other.to_string(),
            "the privacy accountant refused these parameters",
            "see docs/PRIVACY.md for each parameter's domain",
        ))
        .at(key),
    }
}

/// Who runs the job, which decides the defaults that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Runner {
    /// Simulated agents in this process (`tensorguard demo`): with DP,
    /// every user of the population is one simulated client.
    Simulation,
    /// Agents on a network (`coordinator start`, the API): faults are real,
    /// so fault injection is off.
    Fleet,
}

/// The facts a plan needs that only the data can tell.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Values in the model (its f32 parameters).
    pub num_parameters: usize,
    /// Training examples the job's dataset holds.
    pub train_examples: usize,
    /// Examples each simulated client holds, when the runner partitioned
    /// the data itself; a fleet does not know its agents' data.
    pub client_sizes: Option<Vec<usize>>,
}

/// A job whose sections are resolved and validated: everything but the
/// privacy calibration, which needs the [`Facts`].
#[derive(Debug, Clone)]
pub struct Job {
    spec: JobSpec,
    privacy: Option<privacy::Choice>,
    secure: Option<secure::Choice>,
}

/// A job ready to run: the spec with its privacy calibrated and its secure
/// aggregation sized, and what the calibration chose.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// The job, as every runner runs it.
    pub spec: JobSpec,
    /// Whether σ was calibrated to the budget (rather than given).
    pub calibrated: bool,
}

impl JobPlan {
    /// The label every output of a simulated-noise run carries.
    pub fn simulation_label(&self) -> Option<String> {
        self.spec.simulated_noise_seed.map(simulation_label)
    }
}

/// The label of a run whose DP noise comes from a public seed.
pub fn simulation_label(seed: u64) -> String {
    format!(
        "SIMULATION: the DP noise is drawn from the public seed {seed} (privacy.simulated_noise_seed); \
         anyone who knows it can remove the noise, so this run is NOT private — its ε is what a real run would spend"
    )
}

impl Job {
    /// Phase 1: resolves `job` (already layered: flags over a file over the
    /// defaults), `privacy` and `secure` for `runner`, and refuses any value
    /// or combination that could never run.
    pub fn resolve(
        job: &JobSection,
        privacy: Option<&PrivacySection>,
        secure: Option<&SecureSection>,
        runner: Runner,
    ) -> Result<Self> {
        let mut spec = section::resolve(job)?;
        if runner == Runner::Fleet {
            spec.dropout = 0.0; // fault injection is a simulation's; a fleet has real faults
        }
        let privacy = privacy
            .map(|p| privacy::Choice::parse(p, job, &mut spec, runner))
            .transpose()?;
        let distributed = privacy
            .as_ref()
            .is_some_and(privacy::Choice::is_distributed);
        let secure = match (secure, distributed) {
            (Some(s), _) => Some(secure::Choice::parse(s, &spec, runner)?),
            // Distributed DP's noise lives in the masked sum: it implies SecAgg+.
            (None, true) => Some(secure::Choice::parse(
                &SecureSection::default(),
                &spec,
                runner,
            )?),
            (None, false) => None,
        };
        let job = Self {
            spec,
            privacy,
            secure,
        };
        // The combination rules every job obeys, checked on a stand-in of
        // the final spec (same modes, uncalibrated numbers).
        job.sketch().check().map_err(|e| {
            invalid(
                "these job settings contradict each other",
                e.0,
                "change one of the settings named above",
            )
        })?;
        Ok(job)
    }

    /// The resolved job, before calibration (privacy and secure
    /// aggregation are filled in by [`Job::plan`]).
    pub fn spec(&self) -> &JobSpec {
        &self.spec
    }

    /// Whether updates reach the coordinator only as a secure sum
    /// (asked for, or implied by distributed DP).
    pub fn is_secure(&self) -> bool {
        self.secure.is_some()
    }

    /// SIMULATION: the public seed of the coordinator's noise, when the job
    /// asks for one (see [`PrivacySection::simulated_noise_seed`]).
    pub fn simulated_noise_seed(&self) -> Option<u64> {
        self.privacy
            .as_ref()
            .and_then(privacy::Choice::simulated_noise_seed)
    }

    /// Whether agents train with DP-SGD (privacy mode `local-sgd`).
    pub fn is_dp_sgd(&self) -> bool {
        self.privacy
            .as_ref()
            .is_some_and(privacy::Choice::is_dp_sgd)
    }

    /// Whether the job is differentially private.
    pub fn is_private(&self) -> bool {
        self.privacy.is_some()
    }

    fn sketch(&self) -> JobSpec {
        let mut spec = self.spec.clone();
        spec.secure_aggregation = self.secure.as_ref().map(|s| s.sketch());
        spec.privacy = self.privacy.as_ref().and_then(privacy::Choice::sketch);
        spec.train.dp_sgd = match spec.privacy.map(|p| p.mode) {
            Some(tg_types::privacy::DpMode::LocalSgd(s)) => Some(s),
            _ => None,
        };
        spec
    }

    /// Phase 2: calibrates the privacy and sizes the secure aggregation
    /// from `facts`.
    pub fn plan(&self, facts: &Facts) -> Result<JobPlan> {
        let mut spec = self.spec.clone();
        let distributed = self
            .privacy
            .as_ref()
            .is_some_and(privacy::Choice::is_distributed);
        if let Some(s) = &self.secure {
            spec.secure_aggregation = Some(s.size(&spec, facts, distributed)?);
        }
        let mut calibrated = false;
        if let Some(p) = &self.privacy {
            let (privacy, auto) = p.calibrate(&spec, facts)?;
            calibrated = auto;
            spec.train.dp_sgd = match privacy.mode {
                tg_types::privacy::DpMode::LocalSgd(s) => Some(s),
                _ => None,
            };
            if let tg_types::privacy::DpMode::Distributed(d) = privacy.mode
                && let Some(s) = spec.secure_aggregation.as_mut()
            {
                s.clip = d.clip.get();
            }
            spec.privacy = Some(privacy);
        }
        spec.simulated_noise_seed = self.simulated_noise_seed();
        spec.check().map_err(|e| {
            invalid(
                "these job settings contradict each other",
                e.0,
                "change one of the settings named above",
            )
        })?;
        Ok(JobPlan { spec, calibrated })
    }
}

#[cfg(test)]
mod tests;
