//! The job file of `coordinator start --job JOB.toml` (and the API's
//! `POST /jobs`): tg-job reads and validates it, exactly as for
//! `demo --job`; here its addresses and peer ids are resolved for the
//! network.

use std::collections::HashSet;
use std::path::Path;

use tg_job::{JobError, Problem};
use tg_net::{Multiaddr, PeerId};
use tg_types::JobId;

fn invalid(what: String, why: String, fix: &str) -> JobError {
    JobError::Invalid(Problem {
        key: None,
        what,
        why,
        fix: fix.to_owned(),
    })
}

/// A parsed, validated job file, its addresses resolved.
#[derive(Debug)]
pub struct JobFile {
    /// Job id.
    pub id: JobId,
    /// The job, to plan once the coordinator holds its data.
    pub job: tg_job::Job,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// LAN discovery.
    pub mdns: bool,
    /// Relays to listen through.
    pub relays: Vec<Multiaddr>,
    /// Deadlines.
    pub deadlines: tg_job::Deadlines,
    /// Peers admitted without a token.
    pub allowed: HashSet<PeerId>,
    /// Whether enrollment tokens admit peers.
    pub enrollment: bool,
    /// The fleet root every member must be certified by.
    pub fleet_root: Option<[u8; 32]>,
    /// The TEE policy agents must meet, when the job requires one.
    pub attestation: Option<tg_attest::Policy>,
    /// `[model] initial`: the operator's initial model, a safetensors file
    /// (relative to the job file when read with [`load`], else to the
    /// coordinator's working directory).
    pub initial_model: Option<std::path::PathBuf>,
}

fn addrs(key: &str, list: &[String]) -> Result<Vec<Multiaddr>, JobError> {
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
pub fn load(path: &Path) -> Result<JobFile, JobError> {
    let bytes = std::fs::read(path).map_err(|e| {
        JobError::Syntax(Problem {
            key: None,
            what: format!("cannot read job file {}", path.display()),
            why: e.to_string(),
            fix: "check the path (see deploy/examples/digits-secure.toml for an example)".into(),
        })
    })?;
    let mut file = parse(&path.display().to_string(), &bytes)?;
    if let Some(model) = &mut file.initial_model
        && model.is_relative()
        && let Some(dir) = path.parent()
    {
        *model = dir.join(&*model);
    }
    Ok(file)
}

/// Parses a job file's bytes; `origin` names it in errors.
pub fn parse(origin: &str, bytes: &[u8]) -> Result<JobFile, JobError> {
    let file = tg_job::parse_file(origin, bytes)?;
    let allowed = file
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
    Ok(JobFile {
        id: file.id,
        listen: addrs("listen", &file.network.listen)?,
        mdns: file.network.mdns,
        relays: addrs("relays", &file.network.relays)?,
        deadlines: file.deadlines,
        allowed,
        enrollment: file.admission.enrollment,
        fleet_root: file.fleet_root,
        attestation: file.attestation,
        initial_model: file.initial_model.map(std::path::PathBuf::from),
        job: file.job,
    })
}

/// `text` with `defaults` filled in where the file leaves a key out (job
/// defaults set through the API's settings). Returns the file's bytes as
/// they will be run; a file that is not TOML is returned unchanged so that
/// [`parse`] reports the error.
pub fn with_defaults(text: &str, defaults: &crate::api::JobDefaults) -> String {
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
