//! The compliance report of `audit report --job ID`, built only from the
//! audit log (and the keyring's public history), so every line in it can be
//! traced to a signed entry.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::event::{JobCreated, RoundAudit};
use super::{AuditEvent, Entry, VerifyReport};
use crate::KeyRecord;

mod render;
#[cfg(test)]
use render::markdown;
pub use render::write;
use tg_types::record::JobSummary;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// No entry of the log belongs to a job with this id prefix.
    #[error("no job `{0}` in the audit log")]
    NoSuchJob(String),
    /// The prefix names more than one job.
    #[error("`{prefix}` matches {count} jobs")]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// Jobs it matches.
        count: usize,
    },
    /// A report file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// A report: a job id and blocks of text and tables.
pub struct Report {
    /// The job it is about.
    pub job: String,
    blocks: Vec<Block>,
}

enum Block {
    Heading(String),
    Para(String),
    Table {
        head: Vec<String>,
        rows: Vec<Vec<String>>,
    },
}

/// Section titles; tests look for them.
pub const SECTIONS: [&str; 6] = [
    "Audit log integrity",
    "Key rotation history",
    "Encryption parameters",
    "Privacy spent per round",
    "Quorum per round",
    "Attestation outcomes",
];

fn s(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "—".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn resolve_job(prefix: &str, entries: &[Entry]) -> Result<String, ReportError> {
    let mut ids: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.job.as_deref())
        .filter(|j| j.starts_with(prefix))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    match ids.as_slice() {
        [one] => Ok((*one).to_owned()),
        [] => Err(ReportError::NoSuchJob(prefix.to_owned())),
        _ => Err(ReportError::Ambiguous {
            prefix: prefix.to_owned(),
            count: ids.len(),
        }),
    }
}

/// The compliance report of the job whose id starts with `prefix`, from the
/// log's `entries`, its verification, and the keyring's public history;
/// `now` (Unix seconds) is when it is generated.
pub fn build(
    prefix: &str,
    entries: &[Entry],
    verified: &VerifyReport,
    keys: &[KeyRecord],
    log: &Path,
    now: u64,
) -> Result<Report, ReportError> {
    let job = resolve_job(prefix, entries)?;
    let mine: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.job.as_deref() == Some(job.as_str()))
        .collect();
    let mut b = Vec::new();
    b.push(Block::Para(format!(
        "Job `{job}`. Generated {} from `{}`.",
        rfc3339(now),
        log.display()
    )));

    b.push(Block::Heading(SECTIONS[0].into()));
    b.push(Block::Para(if verified.ok {
        format!(
            "VERIFIED: {} entries; hash chain, signatures and signed head intact.",
            verified.entries
        )
    } else {
        format!(
            "NOT VERIFIED: {} finding(s). Nothing below can be relied on until they are explained.",
            verified.findings.len()
        )
    }));
    if let (Some(seq), Some(hash)) = (verified.last_seq, &verified.last_hash) {
        b.push(Block::Para(format!("Head at the time of this report: `{seq}:{hash}`. Record it; `tensorguard audit verify --expect-head {seq}:{hash}` proves a later log still contains it.")));
    }
    if !verified.findings.is_empty() {
        b.push(Block::Table {
            head: vec!["line".into(), "finding".into(), "detail".into()],
            rows: verified
                .findings
                .iter()
                .map(|f| {
                    vec![
                        f.line.to_string(),
                        format!("{:?}", f.kind),
                        f.detail.clone(),
                    ]
                })
                .collect(),
        });
    }

    b.push(Block::Heading(SECTIONS[1].into()));
    b.push(Block::Table {
        head: [
            "key id",
            "purpose",
            "status",
            "valid from",
            "valid until",
            "public key",
        ]
        .map(String::from)
        .to_vec(),
        rows: keys
            .iter()
            .map(|k| {
                vec![
                    k.id.clone(),
                    k.purpose.as_str().into(),
                    format!("{:?}", k.status).to_lowercase(),
                    rfc3339(k.not_before),
                    k.not_after.map_or_else(|| "(active)".into(), rfc3339),
                    k.public_key.clone(),
                ]
            })
            .collect(),
    });
    let key_events: Vec<Vec<String>> = entries
        .iter()
        .filter(|e| e.kind.starts_with("key."))
        .map(|e| {
            vec![
                rfc3339(e.time),
                e.kind.clone(),
                s(e.body.get("id").or(e.body.get("new_id"))),
                s(e.body.get("reason")),
            ]
        })
        .collect();
    b.push(Block::Table {
        head: ["time", "event", "key", "reason"]
            .map(String::from)
            .to_vec(),
        rows: key_events,
    });

    // The job's records, read into the types they were written with; a
    // record of a known kind that does not fit is reported, not skipped.
    let mut created: Option<JobCreated> = None;
    let mut restarts: Vec<(u64, JobCreated)> = Vec::new();
    let mut rounds: Vec<RoundAudit> = Vec::new();
    let mut finished: Vec<(u64, JobSummary)> = Vec::new();
    let mut unreadable: Vec<Vec<String>> = Vec::new();
    let mut stops: Vec<u64> = Vec::new();
    let mut rollbacks: Vec<Vec<String>> = Vec::new();
    for e in &mine {
        match AuditEvent::read(e) {
            // The first is the job's; each later one is a resume, whose
            // settings may differ (shown below, never folded away).
            Some(Ok(AuditEvent::JobCreated(c))) if created.is_none() => created = Some(*c),
            Some(Ok(AuditEvent::JobCreated(c))) => restarts.push((e.seq, *c)),
            Some(Ok(AuditEvent::Round(r))) => rounds.push(r),
            Some(Ok(AuditEvent::JobFinished(f))) => finished.push((e.seq, *f)),
            Some(Ok(AuditEvent::ModelRolledBack(r))) => rollbacks.push(vec![
                r.seq.to_string(),
                rfc3339(e.time),
                r.from.unwrap_or_else(|| "(initial model)".into()),
                format!("{} (round {})", r.to, r.to_round),
                r.actor,
                r.reason,
            ]),
            None if e.kind == super::kind::JOB_STOP_REQUESTED => stops.push(e.seq),
            // A job entry of a kind this report does not know: listed.
            None if !e.kind.starts_with("admission.") && !e.kind.starts_with("key.") => {
                unreadable.push(vec![
                    e.seq.to_string(),
                    e.kind.clone(),
                    "a kind this report does not read".into(),
                ]);
            }
            None => {}
            Some(Err(why)) => unreadable.push(vec![e.seq.to_string(), e.kind.clone(), why]),
        }
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let num = |v: Option<f64>| v.map_or_else(|| "—".into(), |x| x.to_string());
    b.push(Block::Heading(SECTIONS[2].into()));
    match &created {
        Some(c) => {
            let rows = serde_json::to_value(&c.encryption)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .map(|m| m.iter().map(|(k, v)| vec![k.clone(), s(Some(v))]).collect())
                .unwrap_or_default();
            b.push(Block::Table {
                head: vec!["parameter".into(), "value".into()],
                rows,
            });
            if let Some(label) = &c.simulation {
                b.push(Block::Para(label.clone()));
            }
        }
        None => b.push(Block::Para(
            "No readable job.created entry for this job in the log.".into(),
        )),
    }
    for (seq, c) in &restarts {
        let same = created.as_ref().is_some_and(|first| first == c);
        b.push(Block::Para(if same {
            format!("Resumed (entry {seq}) with the same settings.")
        } else {
            format!(
                "Resumed (entry {seq}) with DIFFERENT settings: {}",
                serde_json::to_string(c).unwrap_or_default()
            )
        }));
    }
    if !unreadable.is_empty() {
        b.push(Block::Para(
            "Entries of this job whose body does not match its kind (written by another version, or altered before signing):".into(),
        ));
        b.push(Block::Table {
            head: ["seq", "kind", "why"].map(String::from).to_vec(),
            rows: unreadable,
        });
    }

    b.push(Block::Heading(SECTIONS[3].into()));
    let privacy = created.as_ref().and_then(|c| c.privacy.as_ref());
    b.push(Block::Para(format!(
        "Target ε {} at δ {}; accountant {}.",
        num(privacy.map(|p| p.target_epsilon)),
        num(privacy.map(|p| p.delta)),
        s(privacy.map(|p| &p.accountant))
    )));
    b.push(Block::Table {
        head: ["round", "status", "ε after round", "model SHA-256"]
            .map(String::from)
            .to_vec(),
        rows: rounds
            .iter()
            .map(|r| {
                vec![
                    r.round.to_string(),
                    r.status.as_str().into(),
                    num(r.epsilon),
                    opt(r.model_sha256.clone()),
                ]
            })
            .collect(),
    });

    if !rollbacks.is_empty() {
        b.push(Block::Para(
            "Operators moved the job's model back (each following round started from the version it names; `rollback` is the row of the coordinator's model_rollbacks table, which `tensorguard models list` shows — an entry without its row was written just before a failed commit and did not take effect):".into(),
        ));
        b.push(Block::Table {
            head: ["rollback", "time", "from", "to", "by", "reason"]
                .map(String::from)
                .to_vec(),
            rows: rollbacks,
        });
    }

    // Every round number once, from 1: a gap or a repeat is shown, since a
    // log that verifies can still lack a record its writer failed to write.
    let mut numbers: Vec<u32> = rounds.iter().map(|r| r.round).collect();
    numbers.sort_unstable();
    let repeated: Vec<u32> = numbers
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    let last = numbers.last().copied().unwrap_or(0);
    let missing: Vec<u32> = (1..=last)
        .filter(|n| numbers.binary_search(n).is_err())
        .collect();
    if !missing.is_empty() || !repeated.is_empty() {
        b.push(Block::Para(format!(
            "ROUND RECORDS INCOMPLETE: missing rounds {missing:?}, repeated rounds {repeated:?}."
        )));
    }
    for (seq, f) in &finished {
        b.push(Block::Para(format!(
            "Job ended (entry {seq}): {} — {} of {} planned rounds committed, {} failed; ε spent {}{}; final model {}.",
            f.status.as_str(),
            f.rounds_committed,
            f.rounds,
            f.rounds_failed,
            num(f.epsilon),
            f.epsilon_vs_coordinator
                .map(|e| format!(" (against the coordinator: {e})"))
                .unwrap_or_default(),
            opt(f.final_model_sha256.clone()),
        )));
        if f.rounds_committed + f.rounds_failed != rounds.len() {
            b.push(Block::Para(format!(
                "The job's end counts {} rounds; the log records {}.",
                f.rounds_committed + f.rounds_failed,
                rounds.len()
            )));
        }
    }
    for seq in &stops {
        b.push(Block::Para(format!(
            "An operator asked the job to stop (entry {seq})."
        )));
    }
    if finished.is_empty() {
        b.push(Block::Para("No job.finished entry: the job had not ended when this log was read (or its end was not recorded).".into()));
    }

    b.push(Block::Heading(SECTIONS[4].into()));
    b.push(Block::Table {
        head: ["round", "selected", "aggregated", "quorum", "reason"]
            .map(String::from)
            .to_vec(),
        rows: rounds
            .iter()
            .map(|r| {
                vec![
                    r.round.to_string(),
                    r.selected.to_string(),
                    r.participants.to_string(),
                    r.quorum.to_string(),
                    opt(r.reason.clone()),
                ]
            })
            .collect(),
    });

    b.push(Block::Heading(SECTIONS[5].into()));
    b.push(Block::Para(format!(
        "Policy: {}.",
        s(created.as_ref().map(|c| &c.attestation))
    )));
    b.push(Block::Table {
        head: [
            "time",
            "peer",
            "decision",
            "attestation",
            "hardware",
            "measurement",
            "reasons",
        ]
        .map(String::from)
        .to_vec(),
        rows: mine
            .iter()
            .filter(|e| e.kind.starts_with("admission."))
            .map(|e| {
                vec![
                    rfc3339(e.time),
                    s(e.body.get("peer")),
                    e.kind.trim_start_matches("admission.").into(),
                    s(e.body.pointer("/attestation/label")),
                    s(e.body.pointer("/attestation/hardware_type")),
                    s(e.body.pointer("/attestation/measurement")),
                    s(e.body.pointer("/attestation/reasons")),
                ]
            })
            .collect(),
    });
    Ok(Report { job, blocks: b })
}

#[cfg(test)]
mod tests;
