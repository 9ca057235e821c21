//! The compliance report of `audit report --job ID`, built only from the
//! audit log (and the keyring's public history), so every line in it can be
//! traced to a signed entry.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::event::{JobCreated, RoundAudit};
use super::{AuditEvent, Entry, VerifyReport};
use crate::KeyRecord;

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
    let mut rounds: Vec<RoundAudit> = Vec::new();
    let mut unreadable: Vec<Vec<String>> = Vec::new();
    for e in &mine {
        match AuditEvent::read(e) {
            Some(Ok(AuditEvent::JobCreated(c))) => {
                created.get_or_insert(*c);
            }
            Some(Ok(AuditEvent::Round(r))) => rounds.push(r),
            Some(Ok(_)) | None => {}
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

fn markdown(r: &Report) -> String {
    let mut out = format!("# TensorGuard compliance report — job {}\n\n", r.job);
    for (i, block) in r.blocks.iter().enumerate() {
        match block {
            Block::Heading(h) => out.push_str(&format!(
                "## {}. {h}\n\n",
                SECTIONS.iter().position(|x| x == h).map_or(i, |p| p + 1)
            )),
            Block::Para(p) => out.push_str(&format!("{p}\n\n")),
            Block::Table { head, rows } => {
                let cell = |c: &str| c.replace('|', "\\|").replace('\n', " ");
                out.push_str(&format!(
                    "| {} |\n|{}\n",
                    head.join(" | "),
                    "---|".repeat(head.len())
                ));
                if rows.is_empty() {
                    out.push_str(&format!("| (none){} |\n", " |".repeat(head.len() - 1)));
                }
                for row in rows {
                    out.push_str(&format!(
                        "| {} |\n",
                        row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                    ));
                }
                out.push('\n');
            }
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(r: &Report) -> String {
    let mut out = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>TensorGuard compliance report — {0}</title>\n<style>body{{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #999;padding:.2em .5em;font-size:.9em;word-break:break-all}}th{{background:#eee}}</style></head><body>\n<h1>TensorGuard compliance report — job {0}</h1>\n",
        esc(&r.job)
    );
    for block in &r.blocks {
        match block {
            Block::Heading(h) => out.push_str(&format!("<h2>{}</h2>\n", esc(h))),
            Block::Para(p) => out.push_str(&format!("<p>{}</p>\n", esc(p))),
            Block::Table { head, rows } => {
                out.push_str("<table><tr>");
                for h in head {
                    out.push_str(&format!("<th>{}</th>", esc(h)));
                }
                out.push_str("</tr>\n");
                for row in rows {
                    out.push_str("<tr>");
                    for c in row {
                        out.push_str(&format!("<td>{}</td>", esc(c)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

/// Writes `report-<job>.md` and `.html` into `dir`.
pub fn write(r: &Report, dir: &Path) -> Result<(PathBuf, PathBuf), ReportError> {
    let io = |p: &Path, e: std::io::Error| ReportError::Write {
        path: p.to_owned(),
        source: e,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let short = &r.job[..r.job.len().min(12)];
    let md = dir.join(format!("report-{short}.md"));
    let ht = dir.join(format!("report-{short}.html"));
    std::fs::write(&md, markdown(r)).map_err(|e| io(&md, e))?;
    std::fs::write(&ht, html(r)).map_err(|e| io(&ht, e))?;
    Ok((md, ht))
}
