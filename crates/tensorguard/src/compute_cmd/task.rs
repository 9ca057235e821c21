//! `tensorguard task submit` and `tensorguard task show`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tg_compute::{ComputeError, NodeConfig, Redundancy, Stage, start};
use tg_diag::{Code, UserError, invalid};
use tg_tasks::{TaskInput, TaskOutput, kind_by_name};

use super::{bootstrap, compute_dir, from_compute, from_task, short, submitter_secret};
use crate::cli::{TaskCommand, TaskSubmitArgs};
use crate::errors::runtime;
use crate::output::Output;

fn read_text(arg: &str) -> Result<String, UserError> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            invalid(
                format!("cannot read {path}"),
                e.to_string(),
                "give a readable UTF-8 file after @, or the text itself",
            )
        }),
        None => Ok(arg.to_string()),
    }
}

/// `tensorguard task …`.
pub fn task(cmd: TaskCommand, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    match cmd {
        TaskCommand::Submit(a) => submit(&a, data_dir, out),
        TaskCommand::Show { id } => show(&id, data_dir, out),
    }
}

fn store_path(data_dir: &Path) -> PathBuf {
    compute_dir(data_dir).join("tasks.sqlite")
}

fn show(id: &str, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let store = tg_compute::store::TaskStore::open(&store_path(data_dir)).map_err(from_compute)?;
    let rec = store.find(id).map_err(from_compute)?.ok_or_else(|| {
        UserError::new(
            Code::RunNotFound,
            format!("no task {id}"),
            "no single task in this data directory's store has that id or prefix",
            "list ids with `tensorguard task submit … --json`, or give more digits",
        )
    })?;
    if out.json {
        out.json_value(&serde_json::to_value(&rec).unwrap_or_default());
        return Ok(());
    }
    out.line(&format!(
        "task {} · {} · {:?} · redundancy {:?}",
        rec.id, rec.input.kind, rec.state, rec.redundancy
    ));
    if let Some(r) = &rec.reason {
        out.line(&format!("  reason: {r}"));
    }
    if !rec.verified_by.is_empty() {
        out.line(&format!(
            "  verified by: {}",
            key_prefixes(&rec.verified_by)
        ));
    }
    if !rec.rejected.is_empty() {
        out.line(&format!(
            "  rejected (disagreed): {}",
            key_prefixes(&rec.rejected)
        ));
    }
    if let Some(o) = &rec.output {
        out.line(&format!("  output: {}", summarize(o)));
    }
    Ok(())
}

/// Workers' keys as their first 16 hex digits (whole, if shorter).
fn key_prefixes(keys: &[String]) -> String {
    keys.iter()
        .map(|k| k.get(..16).unwrap_or(k))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn summarize(o: &TaskOutput) -> String {
    match o {
        TaskOutput::Embeddings(v) => format!(
            "{} embedding(s) of {} dims; first: [{}…]",
            v.len(),
            v.first().map_or(0, Vec::len),
            v.first()
                .map(|x| x
                    .iter()
                    .take(4)
                    .map(|f| format!("{f:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        TaskOutput::Labels(l) => l
            .iter()
            .map(|x| {
                format!(
                    "{} ({:.2})",
                    tg_tasks::LABELS[usize::from(x.label).min(2)],
                    x.probs.get(usize::from(x.label)).copied().unwrap_or(0.0)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        TaskOutput::ChunkEmbeddings { spans, .. } => {
            format!("{} chunks, each embedded", spans.len())
        }
        _ => "output".into(),
    }
}

fn submit(a: &TaskSubmitArgs, data_dir: &Path, out: &Output) -> Result<(), UserError> {
    let redundancy = Redundancy::parse(&a.redundancy).ok_or_else(|| {
        invalid(
            format!("--redundancy {}", a.redundancy),
            "must be 1–5 or auto",
            "use e.g. --redundancy 2",
        )
    })?;
    let text = read_text(&a.text)?;
    let kind = kind_by_name(&a.kind).map_err(from_task)?;
    let texts = if a.kind == "chunk" || !a.text.starts_with('@') {
        vec![text]
    } else {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let input = TaskInput {
        kind: a.kind.clone(),
        texts,
    };
    kind.validate(&input).map_err(from_task)?;
    let boot = bootstrap(&a.mesh, data_dir)?;
    let secret = submitter_secret(data_dir, a.mesh.key_file.as_deref())?;
    let dir = compute_dir(data_dir);
    let mut cfg = NodeConfig::new(dir.join("models"), dir.join("submitter-wallet"));
    cfg.bootstrap = boot;
    cfg.mdns = a.mesh.mdns;
    cfg.lan = a.mesh.lan;
    cfg.serve = false;
    cfg.store = Some(store_path(data_dir));
    let rt = runtime()?;
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(a.timeout);
        // One submitter per task store: a second `task submit` on this data
        // directory waits for the first (it holds the store's lock).
        let mut waiting = false;
        let (h, _task) = loop {
            match start(secret, cfg.clone()).await {
                Err(ComputeError::StoreInUse(lock))
                    if tokio::time::Instant::now() + Duration::from_millis(500) < deadline =>
                {
                    if !waiting {
                        waiting = true;
                        out.note(&format!(
                            "another `tensorguard task submit` holds this data directory's task store ({lock}); waiting for it"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                r => break r.map_err(from_compute)?,
            }
        };
        let mut rx = h.progress();
        let id = h.submit(input, redundancy).await.map_err(from_compute)?;
        let idh = hex::encode(id);
        if out.json {
            out.line(&serde_json::json!({"task": idh, "stage": "submitted"}).to_string());
        } else {
            out.line(&format!("task {idh} · {} · redundancy {}", a.kind, a.redundancy));
        }
        loop {
            let p = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(p)) => p,
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) => return Err(from_compute(ComputeError::Stopped)),
                Err(_) => {
                    return Err(UserError::new(
                        Code::TaskFailed,
                        format!("task {idh} not done after {} s", a.timeout),
                        "no quorum of workers answered in time; the task stays stored",
                        "run `tensorguard task submit` again later (pending tasks resume) or `tensorguard task show ID`",
                    ));
                }
            };
            if p.task != idh && p.parent.as_deref() != Some(idh.as_str()) {
                continue;
            }
            if out.json {
                out.line(&serde_json::to_string(&p).unwrap_or_default());
            } else {
                let sub = if p.parent.is_some() { format!("  subtask {}", &p.task[..8]) } else { String::new() };
                let line = match &p.stage {
                    Stage::Searching => "Searching for capable peers…".to_string(),
                    Stage::Assigned { to } => format!("Assigned to {}", to.iter().map(|t| short(t)).collect::<Vec<_>>().join(", ")),
                    Stage::Computing { by } => format!("Computing on {}", short(by)),
                    Stage::Verified { by, rejected } if rejected.is_empty() => format!("Verified: {} agreeing results", by.len()),
                    Stage::Verified { by, rejected } => format!("Verified: {} agree; rejected {}", by.len(), rejected.iter().map(|t| short(t)).collect::<Vec<_>>().join(", ")),
                    Stage::Done => "Done".to_string(),
                    Stage::Failed { reason } => format!("Failed: {reason}"),
                };
                out.line(&format!("{sub}  {line}"));
            }
            if p.task == idh {
                match p.stage {
                    Stage::Done => {
                        // Deliver the receipts of this task before the process ends.
                        h.flush(Duration::from_secs(5)).await;
                        break;
                    }
                    Stage::Failed { reason } => {
                        return Err(UserError::new(Code::TaskFailed, format!("task {idh} failed"), reason, "see `tensorguard task show ID`; resubmit or lower --redundancy"));
                    }
                    _ => {}
                }
            }
        }
        Ok::<(), UserError>(())
    })?;
    Ok(())
}
