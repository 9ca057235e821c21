//! `tensorguard audit verify|export|report`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;
use tg_trust::audit::{
    VerifyOptions, VerifyReport, parse_entries, read_entries, report, verify_log, verify_text,
};

use crate::cli::{AuditCommand, ExportFormat};
use crate::errors::{Code, UserError, from_trust, invalid};
use crate::keys::{audit_log_path, keyring};
use crate::output::Output;

pub fn run(cmd: AuditCommand, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    match cmd {
        AuditCommand::Verify {
            log,
            expect_head,
            no_keyring,
        } => {
            let path = log.unwrap_or_else(|| audit_log_path(data_dir));
            let report = verify(&path, data_dir, expect_head.as_deref(), !no_keyring, None)?;
            print(&report, &path, out);
            if report.ok {
                Ok(())
            } else {
                Err(UserError::new(
                    Code::AuditTampered,
                    format!("the audit log {} failed verification", path.display()),
                    format!(
                        "{} finding(s), first: {}",
                        report.findings.len(),
                        report
                            .findings
                            .first()
                            .map(|f| f.detail.as_str())
                            .unwrap_or("")
                    ),
                    "treat the log as tampered with: preserve it and its .head file, compare with backups and the last head an auditor recorded",
                ))
            }
        }
        AuditCommand::Export {
            format: ExportFormat::Jsonl,
            log,
            job,
        } => {
            let path = log.unwrap_or_else(|| audit_log_path(data_dir));
            let entries = read_entries(&path).map_err(from_trust)?;
            let mut stdout = std::io::stdout().lock();
            for e in entries.iter().filter(|e| {
                job.as_deref()
                    .is_none_or(|j| e.job.as_deref().is_none_or(|ej| ej.starts_with(j)))
            }) {
                let line = serde_json::to_string(e).unwrap_or_default();
                // A closed pipe (`| head`) ends the export quietly.
                if writeln!(stdout, "{line}").is_err() {
                    break;
                }
            }
            Ok(())
        }
        AuditCommand::Report { job, out: dir, log } => {
            let path = log.unwrap_or_else(|| audit_log_path(data_dir));
            // Read once: the report shows exactly the entries that were verified.
            if !path.exists() {
                verify(&path, data_dir, None, true, None)?;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                UserError::new(
                    Code::AuditLog,
                    format!("cannot read {}", path.display()),
                    e.to_string(),
                    "check the file's permissions",
                )
            })?;
            let verified = verify(&path, data_dir, None, true, Some(&text))?;
            let entries = parse_entries(&path, &text).map_err(from_trust)?;
            let ring = keyring(data_dir)?;
            let report = report::build(
                &job,
                &entries,
                &verified,
                ring.records(),
                &path,
                crate::keys::now_secs(),
            )
            .map_err(report_error)?;
            let dir = dir.unwrap_or_else(|| data_dir.join("reports"));
            let written = report::write(&report, &dir).map_err(report_error)?;
            if out.json {
                out.json_value(&json!({"job": report.job, "markdown": written.0, "html": written.1, "log_verified": verified.ok}));
            } else {
                out.line(&format!("wrote {}", written.0.display()));
                out.line(&format!("wrote {}", written.1.display()));
                if !verified.ok {
                    out.line(
                        &out.red(
                            "the audit log did NOT verify: the report says so on its first page",
                        ),
                    );
                }
            }
            Ok(())
        }
    }
}

/// Verifies the log at `path` (its `text`, when the caller already read it).
fn verify(
    path: &Path,
    data_dir: &Path,
    expect_head: Option<&str>,
    use_keyring: bool,
    text: Option<&str>,
) -> Result<VerifyReport, UserError> {
    if !path.exists() {
        return Err(UserError::new(
            Code::AuditLog,
            format!("no audit log at {}", path.display()),
            "nothing has been recorded on this node yet, or --data-dir points elsewhere",
            "pass --log FILE or the right --data-dir",
        ));
    }
    let expect_head = expect_head
        .map(|s| {
            let (seq, hash) = s.split_once(':').unwrap_or((s, ""));
            match (seq.parse::<u64>(), hash.len() == 64) {
                (Ok(seq), true) => Ok((seq, hash.to_ascii_lowercase())),
                _ => Err(invalid(
                    format!("--expect-head {s}"),
                    "expected SEQ:HASH",
                    "copy the head printed by an earlier `audit verify`",
                )),
            }
        })
        .transpose()?;
    let keys_dir: PathBuf = data_dir.join("keys");
    let keyring = if use_keyring && keys_dir.join("keyring.json").exists() {
        Some(keyring(data_dir)?.records().to_vec())
    } else {
        None
    };
    let opts = VerifyOptions {
        keyring,
        expect_head,
    };
    match text {
        Some(text) => verify_text(path, text, &opts),
        None => verify_log(path, &opts),
    }
    .map_err(from_trust)
}

fn print(r: &VerifyReport, path: &Path, out: &Output) {
    if out.json {
        out.json_value(&json!({
            "ok": r.ok,
            "log": path,
            "entries": r.entries,
            "head": r.last_seq.zip(r.last_hash.as_ref()).map(|(s, h)| format!("{s}:{h}")),
            "signers": r.signers,
            "findings": r.findings,
        }));
        return;
    }
    if r.ok {
        out.line(&format!(
            "{}  {} entries, chain and signatures intact",
            out.green("OK"),
            r.entries
        ));
    } else {
        out.line(&format!(
            "{}  {} entries, {} finding(s)",
            out.red("TAMPERED"),
            r.entries,
            r.findings.len()
        ));
    }
    for f in &r.findings {
        let at = if f.line == 0 {
            "head".to_owned()
        } else {
            format!("line {}", f.line)
        };
        out.line(&format!("  {at:<9} {:?}: {}", f.kind, f.detail));
    }
    if let (Some(seq), Some(hash)) = (r.last_seq, &r.last_hash) {
        out.line(&format!(
            "head {seq}:{hash}  (record it; check later logs with --expect-head)"
        ));
    }
}

fn report_error(e: report::ReportError) -> UserError {
    match e {
        report::ReportError::NoSuchJob(prefix) => UserError::new(
            Code::RunNotFound,
            format!("no job `{prefix}` in the audit log"),
            "the log has no entry for such a job",
            "list jobs with `tensorguard audit export | grep job.created`",
        ),
        report::ReportError::Ambiguous { prefix, count } => UserError::new(
            Code::RunNotFound,
            format!("`{prefix}` matches {count} jobs"),
            "the id prefix is not unique",
            "give more of the job id",
        ),
        report::ReportError::Write { path, source } => UserError::new(
            Code::DataDirUnwritable,
            format!("cannot write {}", path.display()),
            source.to_string(),
            "choose a writable --out directory",
        ),
        other => UserError::new(
            Code::Internal,
            other.to_string(),
            "the report could not be made",
            "report this with the command line",
        ),
    }
}
