//! The job file of `tensorguard coordinator start --job JOB.toml`.
//!
//! Design decision: the `[job]` table takes exactly the keys of the config
//! file's `[demo]` table and is resolved by the same code, so a job behaves
//! on a fleet as it does in `tensorguard demo` (`clients` is the number of
//! agents the job is planned for). Network, deadlines and admission are
//! tables of their own. Unknown keys are errors. The job id is the file's
//! `id`, or else derived from the file's bytes — restarting the coordinator
//! on the same file resumes the same job.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tg_net::{Multiaddr, PeerId};
use tg_types::JobId;
use tg_types::spec::{JobSpec, SecureAggSpec};

use crate::cli::DemoArgs;
#[path = "jobfile_raw.rs"]
mod raw;
use crate::config::{self, DemoSection};
use crate::errors::{CliError, Code, invalid};
use raw::{RawAdmission, RawDeadlines, RawNetwork, RawSecure};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    id: Option<String>,
    job: DemoSection,
    #[serde(default)]
    secure_aggregation: Option<RawSecure>,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    deadlines: RawDeadlines,
    #[serde(default)]
    admission: RawAdmission,
    #[serde(default)]
    privacy: Option<RawPrivacy>,
    #[serde(default)]
    attestation: Option<RawAttestation>,
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

/// `[privacy]`: sample-level DP (DP-SGD on every agent: `sampling_rate`,
/// `steps_per_round`, `max_grad_norm`) or user-level DP-FedAvg at the
/// coordinator (`central`: `clip`, `population`; clients are sampled at the
/// job's `fraction`). The noise multiplier is explicit; the ledger stops the
/// job before `target_epsilon` would be crossed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    mode: String,
    target_epsilon: f64,
    #[serde(default = "default_delta")]
    delta: f64,
    #[serde(default = "default_accountant")]
    accountant: String,
    noise_multiplier: f64,
    #[serde(default = "default_max_grad_norm")]
    max_grad_norm: f64,
    sampling_rate: Option<f64>,
    steps_per_round: Option<u32>,
    clip: Option<f64>,
    population: Option<u32>,
}

fn default_delta() -> f64 {
    1e-5
}
fn default_accountant() -> String {
    "pld".into()
}
fn default_max_grad_norm() -> f64 {
    1.0
}

fn privacy_spec(p: &RawPrivacy, job: &JobSpec) -> Result<tg_types::privacy::PrivacySpec, CliError> {
    use tg_privacy::{AccountantKind, ClipNorm, Delta, Epsilon, NoiseMultiplier, SamplingRate};
    use tg_types::privacy::{CentralDpSpec, ClipSpec, DpMode, DpSgdSpec, PrivacySpec};
    let param = |key: &str, e: tg_privacy::PrivacyError| {
        CliError::new(
            Code::PrivacyParam,
            format!("privacy.{key} is out of range"),
            e.to_string(),
            "see docs/PRIVACY.md for each parameter's domain",
        )
    };
    let needs = |key: &str, mode: &str, example: &str| {
        invalid(
            format!("privacy.mode = \"{mode}\" without privacy.{key}"),
            format!("{mode} DP needs {key}"),
            format!("add e.g. {key} = {example}"),
        )
    };
    let not_for = |key: &str, mode: &str, instead: &str| {
        invalid(
            format!("privacy.{key} with mode = \"{mode}\""),
            format!("{key} has no meaning for {mode} DP"),
            instead.to_owned(),
        )
    };
    let noise_multiplier =
        NoiseMultiplier::new(p.noise_multiplier).map_err(|e| param("noise_multiplier", e))?;
    let mode = match p.mode.as_str() {
        "local-sgd" => {
            if p.clip.is_some() || p.population.is_some() {
                return Err(not_for(
                    "clip/population",
                    "local-sgd",
                    "DP-SGD clips each example to max_grad_norm; remove clip and population",
                ));
            }
            let sampling_rate = p
                .sampling_rate
                .ok_or_else(|| needs("sampling_rate", "local-sgd", "0.05"))?;
            let steps_per_round = p
                .steps_per_round
                .ok_or_else(|| needs("steps_per_round", "local-sgd", "20"))?;
            if steps_per_round == 0 {
                return Err(invalid(
                    "privacy.steps_per_round = 0",
                    "a round must take at least one step",
                    "use e.g. steps_per_round = 20",
                ));
            }
            DpMode::LocalSgd(DpSgdSpec {
                noise_multiplier,
                max_grad_norm: ClipNorm::new(p.max_grad_norm)
                    .map_err(|e| param("max_grad_norm", e))?,
                sampling_rate: SamplingRate::new(sampling_rate)
                    .map_err(|e| param("sampling_rate", e))?,
                steps_per_round,
            })
        }
        "central" => {
            if p.sampling_rate.is_some() || p.steps_per_round.is_some() {
                return Err(not_for(
                    "sampling_rate/steps_per_round",
                    "central",
                    "central DP samples clients at the job's fraction; remove them",
                ));
            }
            let clip = p.clip.ok_or_else(|| needs("clip", "central", "1.0"))?;
            DpMode::Central(CentralDpSpec {
                noise_multiplier,
                clip: ClipSpec::Fixed {
                    norm: ClipNorm::new(clip).map_err(|e| param("clip", e))?,
                },
                client_sampling_rate: SamplingRate::new(job.fraction)
                    .map_err(|e| param("fraction", e))?,
                population: p.population.unwrap_or(job.clients),
            })
        }
        other => {
            return Err(invalid(
                format!("privacy.mode = \"{other}\""),
                "a job file supports sample-level DP (local-sgd) and DP-FedAvg at the coordinator (central)",
                "use mode = \"local-sgd\" or \"central\"; distributed DP runs in `tensorguard demo --dp distributed` for now",
            ));
        }
    };
    let accountant = match p.accountant.as_str() {
        "rdp" => AccountantKind::Rdp,
        "pld" => AccountantKind::Pld,
        other => {
            return Err(invalid(
                format!("privacy.accountant = \"{other}\""),
                "DP-SGD and DP-FedAvg are accounted by RDP or PLD",
                "use \"pld\" (tightest) or \"rdp\"",
            ));
        }
    };
    let spec = PrivacySpec {
        mode,
        target_epsilon: Epsilon::new(p.target_epsilon).map_err(|e| param("target_epsilon", e))?,
        delta: Delta::new(p.delta).map_err(|e| param("delta", e))?,
        accountant,
        // DP-SGD: each agent samples its own examples, so amplification holds
        // against the coordinator too; central DP trusts the coordinator.
        budget_against: Default::default(),
    };
    spec.per_round().map_err(|e| param("sampling_rate", e))?;
    Ok(spec)
}

/// Per-stage deadlines of a job.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// Waiting for the planned agents before round 1.
    pub join: Duration,
    /// Local training and the first upload of a round.
    pub train: Duration,
    /// Each later secure-aggregation stage.
    pub stage: Duration,
}

/// A parsed, validated job file.
#[derive(Debug)]
pub struct JobFile {
    /// Job id.
    pub id: JobId,
    /// What to train, as in the demo.
    pub spec: JobSpec,
    /// Examples per unit of FedAvg weight in secure rounds.
    pub weight_scale: f64,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// LAN discovery.
    pub mdns: bool,
    /// Relays to listen through.
    pub relays: Vec<Multiaddr>,
    /// Deadlines.
    pub deadlines: Deadlines,
    /// Peers admitted without a token.
    pub allowed: HashSet<PeerId>,
    /// Whether enrollment tokens admit peers.
    pub enrollment: bool,
    /// The fleet root every member must be certified by.
    pub fleet_root: Option<[u8; 32]>,
    /// The TEE policy agents must meet, when the job requires one.
    pub attestation: Option<tg_attest::Policy>,
}

fn fleet_root(hex: &str) -> Result<[u8; 32], CliError> {
    tg_proto::key_from_hex(hex).ok_or_else(|| {
        invalid(
            format!("admission.fleet_root = \"{}\"", hex.trim()),
            "expected 64 hex digits (the public key `keys fleet-root` printed)",
            "copy the fleet root's public key exactly",
        )
    })
}

fn secs(key: &str, v: f64) -> Result<Duration, CliError> {
    if v.is_finite() && v > 0.0 && v < 1e7 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(invalid(
            format!("deadlines.{key} = {v}"),
            "a deadline must be a positive number of seconds",
            format!("set e.g. {key} = 30"),
        ))
    }
}

fn addrs(key: &str, list: &[String]) -> Result<Vec<Multiaddr>, CliError> {
    list.iter()
        .map(|a| {
            a.parse().map_err(|e| {
                invalid(
                    format!("network.{key}: `{a}`"),
                    format!("not a multiaddr: {e}"),
                    "write addresses like /ip4/0.0.0.0/tcp/7700 or /ip4/0.0.0.0/udp/7700/quic-v1",
                )
            })
        })
        .collect()
}

/// Reads and validates a job file.
pub fn load(path: &Path) -> Result<JobFile, CliError> {
    let bytes = std::fs::read(path).map_err(|e| {
        CliError::new(
            Code::ConfigInvalid,
            format!("cannot read job file {}", path.display()),
            e.to_string(),
            "check the path (see deploy/examples/digits-secure.toml for an example)",
        )
    })?;
    parse(&path.display().to_string(), &bytes)
}

/// Parses a job file's bytes; `origin` names it in errors.
pub fn parse(origin: &str, bytes: &[u8]) -> Result<JobFile, CliError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        CliError::new(
            Code::ConfigInvalid,
            format!("job file {origin} is not UTF-8"),
            e.to_string(),
            "save it as UTF-8 text (TOML)",
        )
    })?;
    let raw: Raw = toml::from_str(text).map_err(|e| {
        CliError::new(
            Code::ConfigInvalid,
            format!("job file {origin} is invalid"),
            e.to_string().trim().replace('\n', " "),
            "fix the key named above (see deploy/examples/digits-secure.toml)",
        )
    })?;
    let mut spec = config::resolve_demo(&DemoArgs::default(), &raw.job).map_err(|(_, e)| e)?;
    spec.dropout = 0.0; // fault injection is a demo feature; a fleet has real faults
    if let Some(p) = &raw.privacy {
        let privacy = privacy_spec(p, &spec)?;
        spec.train.dp_sgd = match privacy.mode {
            tg_types::privacy::DpMode::LocalSgd(s) => Some(s),
            _ => None,
        };
        spec.privacy = Some(privacy);
    }
    let weight_scale = match &raw.secure_aggregation {
        None => 100.0,
        Some(s) => {
            if let Some(f) = s.sparsity.filter(|f| !(*f > 0.0 && *f <= 1.0)) {
                return Err(invalid(
                    format!("secure_aggregation.sparsity = {f}"),
                    "the fraction of coordinates sent must be in (0, 1]",
                    "use e.g. sparsity = 0.5",
                ));
            }
            for (k, v) in [("corrupt", s.corrupt), ("dropout", s.dropout)] {
                if !(0.0..1.0).contains(&v) {
                    return Err(invalid(
                        format!("secure_aggregation.{k} = {v}"),
                        "an assumed fraction of clients must be in [0, 1)",
                        format!("use e.g. {k} = 0.3"),
                    ));
                }
            }
            if !(s.weight_scale.is_finite() && s.weight_scale > 0.0) {
                return Err(invalid(
                    format!("secure_aggregation.weight_scale = {}", s.weight_scale),
                    "the examples per unit of weight must be positive",
                    "use about the mean number of examples per agent",
                ));
            }
            spec.secure_aggregation = Some(SecureAggSpec {
                bits: s.bits,
                clip: s.clip,
                corrupt: s.corrupt,
                dropout: s.dropout,
                keep_fraction: s.sparsity,
                weight_scale: Some(s.weight_scale),
            });
            s.weight_scale
        }
    };
    // The rules every job obeys, as the demo applies them (same E020).
    spec.check().map_err(|e| {
        invalid(
            format!("job file {origin}"),
            e.0,
            "the job's settings are inconsistent: change the ones named above",
        )
    })?;
    let allowed = raw
        .admission
        .allowed_peers
        .iter()
        .map(|p| {
            p.parse::<PeerId>().map_err(|e| {
                invalid(
                    format!("admission.allowed_peers: `{p}`"),
                    format!("not a peer id: {e}"),
                    "copy the peer id an agent prints at start (`tensorguard agent start` or `tensorguard status`)",
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let id = match &raw.id {
        Some(s) => s.parse::<JobId>().map_err(|e| {
            invalid(
                format!("id = \"{s}\""),
                e.to_string(),
                "use 32 hex characters, or remove `id` to derive it from the file",
            )
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
    Ok(JobFile {
        id,
        spec,
        weight_scale,
        listen: addrs("listen", &raw.network.listen)?,
        mdns: raw.network.mdns,
        relays: addrs("relays", &raw.network.relays)?,
        deadlines: Deadlines {
            join: secs("join_secs", raw.deadlines.join_secs)?,
            train: secs("train_secs", raw.deadlines.train_secs)?,
            stage: secs("stage_secs", raw.deadlines.stage_secs)?,
        },
        allowed,
        enrollment: raw.admission.enrollment,
        fleet_root: match &raw.admission.fleet_root {
            None => None,
            Some(h) => Some(fleet_root(h)?),
        },
        attestation: match raw.attestation.filter(|a| a.required) {
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
                    ));
                }
                Some(policy)
            }
        },
    })
}

/// `text` with `defaults` filled in where the file leaves a key out (job
/// defaults set through the API's settings). Returns the file's bytes as
/// they will be run; a file that is not TOML is returned unchanged so that
/// [`parse`] reports the error.
pub fn with_defaults(text: &str, defaults: &tg_coordinator::api::JobDefaults) -> String {
    let Ok(mut doc) = text.parse::<toml::Table>() else {
        return text.to_owned();
    };
    let mut changed = false;
    let mut fill = |table: &str, key: &str, value: Option<toml::Value>| {
        let Some(value) = value else { return };
        if let Some(toml::Value::Table(t)) = doc.get_mut(table)
            && !t.contains_key(key)
        {
            t.insert(key.to_owned(), value);
            changed = true;
        }
    };
    let int = |v: Option<u32>| v.map(|v| toml::Value::Integer(i64::from(v)));
    let float = |v: Option<f64>| v.map(toml::Value::Float);
    fill("job", "rounds", int(defaults.rounds));
    fill("job", "local_epochs", int(defaults.local_epochs));
    fill("job", "batch_size", int(defaults.batch_size));
    fill("job", "min_clients", int(defaults.min_clients));
    fill("job", "lr", float(defaults.lr));
    fill("privacy", "target_epsilon", float(defaults.target_epsilon));
    fill("privacy", "delta", float(defaults.delta));
    fill("secure_aggregation", "sparsity", float(defaults.sparsity));
    if changed {
        toml::to_string(&doc).unwrap_or_else(|_| text.to_owned())
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
#[path = "jobfile_tests.rs"]
mod tests;
