//! The job file (`coordinator start --job`, `demo --job`, the API's
//! `POST /jobs` body): the three job sections, and the tables only a fleet
//! reads — network, deadlines, admission and attestation.
//!
//! Unknown keys are errors. The job id is the file's `id`, or else derived
//! from the file's bytes, so restarting a coordinator on the same file
//! resumes the same job. A file resolves as a fleet job whichever runner
//! runs it, so that both run the same job.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tg_types::JobId;

use crate::{
    Job, JobError, JobSection, PrivacySection, Result, Runner, SecureSection, invalid, problem,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: Option<String>,
    job: JobSection,
    #[serde(default)]
    secure_aggregation: Option<SecureSection>,
    #[serde(default)]
    network: NetworkSection,
    #[serde(default)]
    deadlines: RawDeadlines,
    #[serde(default)]
    admission: AdmissionSection,
    #[serde(default)]
    privacy: Option<PrivacySection>,
    #[serde(default)]
    attestation: Option<RawAttestation>,
    #[serde(default)]
    model: Option<ModelSection>,
}

/// `[model]`: the operator's own model instead of a built-in one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSection {
    /// A safetensors file (f32, f16 or bf16 tensors): the initial model.
    initial: String,
}

/// `[network]`: where the coordinator listens. Addresses are validated by
/// the network layer when it starts them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Multiaddrs to listen on.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// LAN discovery.
    #[serde(default)]
    pub mdns: bool,
    /// Relays to listen through.
    #[serde(default)]
    pub relays: Vec<String>,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            mdns: false,
            relays: Vec::new(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec![
        "/ip4/0.0.0.0/tcp/7700".into(),
        "/ip4/0.0.0.0/udp/7700/quic-v1".into(),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeadlines {
    #[serde(default = "default_join")]
    join_secs: f64,
    #[serde(default = "default_train")]
    train_secs: f64,
    #[serde(default = "default_stage")]
    stage_secs: f64,
}

impl Default for RawDeadlines {
    fn default() -> Self {
        Self {
            join_secs: default_join(),
            train_secs: default_train(),
            stage_secs: default_stage(),
        }
    }
}

fn default_join() -> f64 {
    300.0
}
fn default_train() -> f64 {
    300.0
}
fn default_stage() -> f64 {
    30.0
}

/// Per-stage deadlines of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Waiting for the planned agents before round 1.
    pub join: Duration,
    /// Local training and the first upload of a round.
    pub train: Duration,
    /// Each later secure-aggregation stage.
    pub stage: Duration,
}

/// `[admission]`: who may join. Without the table, enrollment tokens admit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSection {
    /// Peer ids admitted without a token.
    #[serde(default)]
    pub allowed_peers: Vec<String>,
    /// Whether enrollment tokens admit peers.
    #[serde(default = "yes")]
    pub enrollment: bool,
    /// The fleet root (64 hex digits) whose certificate every member must present.
    #[serde(default)]
    pub fleet_root: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for AdmissionSection {
    fn default() -> Self {
        Self {
            allowed_peers: Vec::new(),
            enrollment: true,
            fleet_root: None,
        }
    }
}

/// `[attestation]`: whether agents must run in a TEE, and the policy their
/// evidence must meet (`[attestation.policy]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttestation {
    required: bool,
    #[serde(default)]
    policy: Option<tg_attest::Policy>,
}

/// A parsed, validated job file.
#[derive(Debug, Clone)]
pub struct JobFile {
    /// Job id.
    pub id: JobId,
    /// The job, resolved (calibrate it with [`Job::plan`]).
    pub job: Job,
    /// Where to listen.
    pub network: NetworkSection,
    /// Deadlines.
    pub deadlines: Deadlines,
    /// Who may join (the peer ids are checked by the network layer).
    pub admission: AdmissionSection,
    /// The fleet root every member must be certified by.
    pub fleet_root: Option<[u8; 32]>,
    /// The TEE policy agents must meet, when the job requires one.
    pub attestation: Option<tg_attest::Policy>,
    /// `[model] initial`: the operator's initial model (a safetensors file,
    /// as written; a relative path is relative to the job file). Agents
    /// bring the model's code (the Python SDK); the job has no held-out
    /// data, so every finite aggregate is committed.
    pub initial_model: Option<String>,
}

fn secs(key: &str, v: f64) -> Result<Duration> {
    if v.is_finite() && v > 0.0 && v < 1e7 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(invalid(
            format!("deadlines.{key} = {v}"),
            "a deadline must be a positive number of seconds",
            format!("set e.g. {key} = 30"),
        )
        .at(&format!("deadlines.{key}")))
    }
}

fn fleet_root(text: &str) -> Result<[u8; 32]> {
    let t = text.trim();
    let mut out = [0u8; 32];
    let ok = t.len() == 64
        && t.is_ascii()
        && out.iter_mut().enumerate().all(|(i, b)| {
            u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                .map(|v| *b = v)
                .is_ok()
        });
    if ok {
        Ok(out)
    } else {
        Err(invalid(
            format!("admission.fleet_root = \"{t}\""),
            "expected 64 hex digits (the public key `keys fleet-root` printed)",
            "copy the fleet root's public key exactly",
        )
        .at("admission.fleet_root"))
    }
}

/// A job whose model is the operator's file names no built-in model or
/// dataset, and asks only what a learner that brings its own model code
/// can do.
fn custom_model_fits(section: &JobSection, job: &Job, initial: &str) -> Result<()> {
    if initial.trim().is_empty() {
        return Err(invalid(
            "model.initial = \"\"",
            "the initial model must name a safetensors file",
            "write e.g. initial = \"initial.safetensors\" (saved with tensorguard.save_model or safetensors.torch.save_file)",
        )
        .at("model.initial"));
    }
    for (key, set) in [
        ("model", section.model.is_some()),
        ("hidden", section.hidden.is_some()),
        ("dataset", section.dataset.is_some()),
    ] {
        if set {
            return Err(invalid(
                format!("job.{key} together with [model] initial"),
                "the job trains the operator's own model, which brings its own architecture, and its agents their own data",
                format!("remove job.{key}, or remove the [model] table to train a built-in model"),
            )
            .at(&format!("job.{key}")));
        }
    }
    let spec = job.spec();
    if spec.strategy.kind == tg_types::spec::StrategyKind::Scaffold {
        return Err(invalid(
            "strategy = \"scaffold\" with [model] initial",
            "SCAFFOLD needs control variates kept by the agent's learner, and the learners of an operator's model (the Python SDK's) do not keep them",
            "use fedavg, fedprox or fedadam",
        )
        .at("job.strategy"));
    }
    if job.is_dp_sgd() {
        return Err(invalid(
            "DP-SGD (privacy mode local-sgd) with [model] initial",
            "the agent charges ε for DP-SGD on its learner's word, and only the built-in learner's per-example clipping and noise are tested",
            "use mode = \"central\" or \"distributed\" under [privacy]",
        )
        .at("privacy.mode"));
    }
    Ok(())
}

fn toml_error(origin: &str, e: &toml::de::Error) -> JobError {
    let p = problem(
        format!("job file {origin} is invalid"),
        e.to_string().trim().replace('\n', " "),
        "fix the key named above (see deploy/examples/)",
    );
    if e.message().starts_with("unknown field") {
        JobError::UnknownKey(p)
    } else {
        JobError::Syntax(p)
    }
}

/// The sections a simulation reads: a job file without the fleet's tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulationRaw {
    job: JobSection,
    #[serde(default)]
    secure_aggregation: Option<SecureSection>,
    #[serde(default)]
    privacy: Option<PrivacySection>,
}

/// Parses and resolves the `[job]`, `[privacy]` and `[secure_aggregation]`
/// sections of `text` (TOML) for an in-process simulation (the Python
/// SDK's `simulation.run`), with a job file's keys, rules and error codes.
pub fn parse_simulation(origin: &str, text: &str) -> Result<Job> {
    let raw: SimulationRaw = toml::from_str(text).map_err(|e| toml_error(origin, &e))?;
    Job::resolve(
        &raw.job,
        raw.privacy.as_ref(),
        raw.secure_aggregation.as_ref(),
        Runner::Simulation,
    )
}

/// Parses and validates a job file's bytes; `origin` names it in errors.
pub fn parse_file(origin: &str, bytes: &[u8]) -> Result<JobFile> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        JobError::Syntax(problem(
            format!("job file {origin} is not UTF-8"),
            e.to_string(),
            "save it as UTF-8 text (TOML)",
        ))
    })?;
    let raw: Raw = toml::from_str(text).map_err(|e| toml_error(origin, &e))?;
    let in_file = |e: JobError| {
        let mut e = e;
        if let JobError::Invalid(p) | JobError::Quorum(p) = &mut e {
            p.what = format!("job file {origin}: {}", p.what);
        }
        e
    };
    let job = Job::resolve(
        &raw.job,
        raw.privacy.as_ref(),
        raw.secure_aggregation.as_ref(),
        Runner::Fleet,
    )
    .map_err(in_file)?;
    let id = match &raw.id {
        Some(s) => s.parse::<JobId>().map_err(|e| {
            invalid(
                format!("id = \"{s}\""),
                e.to_string(),
                "use 32 hex characters, or remove `id` to derive it from the file",
            )
            .at("id")
        })?,
        None => {
            use sha2::Digest;
            let d = sha2::Sha256::new()
                .chain_update(b"tensorguard-job-file\0")
                .chain_update(bytes)
                .finalize();
            let mut b = [0u8; 16];
            b.copy_from_slice(&d[..16]);
            JobId::from_bytes(b)
        }
    };
    let attestation = match raw.attestation.filter(|a| a.required) {
        None => None,
        Some(a) => {
            let policy = a.policy.unwrap_or_default();
            // A TEE running unknown code protects nothing: pin the code,
            // or say plainly that any code is admitted.
            if !policy.pins_code() && !policy.admits_any_code() {
                return Err(invalid(
                    "attestation.policy.measurements",
                    "the job requires attestation but pins no measurement: any genuine confidential VM, whatever code it runs, would be admitted as TRUSTED",
                    "list the allowed launch measurements (and pin RTMRs or host_data as needed), or set measurements = \"any\" to admit any code explicitly (it is labelled ANY CODE)",
                )
                .at("attestation.policy.measurements"));
            }
            Some(policy)
        }
    };
    if let Some(m) = &raw.model {
        custom_model_fits(&raw.job, &job, &m.initial)?;
    }
    Ok(JobFile {
        id,
        job,
        initial_model: raw.model.map(|m| m.initial),
        network: raw.network,
        deadlines: Deadlines {
            join: secs("join_secs", raw.deadlines.join_secs)?,
            train: secs("train_secs", raw.deadlines.train_secs)?,
            stage: secs("stage_secs", raw.deadlines.stage_secs)?,
        },
        fleet_root: raw
            .admission
            .fleet_root
            .as_deref()
            .map(fleet_root)
            .transpose()?,
        admission: raw.admission,
        attestation,
    })
}
