//! `tensorguard runs list|show`.

use std::path::Path;

use serde_json::json;
use tg_store::{JobRow, Store};
use tg_types::record::RoundStatus;

use crate::demo::human_bytes;
use crate::errors::{UserError, from_store};
use crate::output::Output;

fn open(dir: &Path) -> Result<Store, UserError> {
    Store::open_existing(dir).map_err(|e| from_store(e, dir))
}

fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn job_json(j: &JobRow) -> serde_json::Value {
    json!({
        "run_id": j.id, "kind": j.kind, "created_at": when(j.created_at_ms), "status": j.status.as_str(),
        "reason": j.reason, "rounds_committed": j.rounds_committed, "rounds_failed": j.rounds_failed,
        "last_accuracy": j.last_accuracy, "spec": j.spec,
    })
}

pub fn list(dir: &Path, out: &Output) -> Result<(), UserError> {
    if !dir.join(tg_store::DB_FILE).exists() {
        if out.json {
            out.json_value(&json!({"runs": []}));
        } else {
            out.line(&format!(
                "no runs yet in {} — start one with `tensorguard demo`",
                dir.display()
            ));
        }
        return Ok(());
    }
    let jobs = open(dir)?.list_jobs().map_err(|e| from_store(e, dir))?;
    if out.json {
        out.json_value(&json!({"runs": jobs.iter().map(job_json).collect::<Vec<_>>()}));
        return Ok(());
    }
    out.line(&out.bold(&format!(
        "{:<14}{:<22}{:<13}{:<10}{:<9}{}",
        "RUN", "CREATED", "STATUS", "ROUNDS", "ACC", "STRATEGY"
    )));
    for j in &jobs {
        let strategy = j
            .spec
            .pointer("/strategy/kind")
            .and_then(|v| v.as_str())
            .unwrap_or("-");
        out.line(&format!(
            "{:<14}{:<22}{:<13}{:<10}{:<9}{}",
            &j.id[..12],
            when(j.created_at_ms),
            j.status.as_str(),
            format!("{}+{}f", j.rounds_committed, j.rounds_failed),
            j.last_accuracy.map_or("-".into(), |a| format!("{:.3}", a)),
            strategy
        ));
    }
    Ok(())
}

pub fn show(dir: &Path, id: &str, out: &Output) -> Result<(), UserError> {
    let store = open(dir)?;
    let job = store.find_job(id).map_err(|e| from_store(e, dir))?;
    let rounds = store.rounds(&job.id).map_err(|e| from_store(e, dir))?;
    let ledger = store.ledger(&job.id).map_err(|e| from_store(e, dir))?;
    // What the ledger has paid for — at least what was spent, even after a crash.
    let spent = ledger
        .iter()
        .map(|e| e.epsilon_after)
        .fold(None, |m: Option<f64>, e| Some(m.map_or(e, |m| m.max(e))));
    if out.json {
        let mut v = job_json(&job);
        v["summary"] = job.summary.clone().unwrap_or(serde_json::Value::Null);
        v["rounds"] = serde_json::to_value(&rounds).unwrap_or_default();
        if !ledger.is_empty() {
            v["epsilon"] = json!(spent);
            v["delta"] = json!(ledger[0].delta.get());
            v["accountant"] = json!(ledger[0].accountant.as_str());
            v["privacy_ledger"] = serde_json::to_value(&ledger).unwrap_or_default();
        }
        out.json_value(&v);
        return Ok(());
    }
    out.line(&format!("{} {}", out.bold("run"), job.id));
    out.line(&format!("  created   {}", when(job.created_at_ms)));
    out.line(&format!(
        "  status    {}{}",
        job.status.as_str(),
        job.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    ));
    out.line(&format!("  spec      {}", job.spec));
    if let (Some(e), Some(first)) = (spent, ledger.first()) {
        let target = job
            .spec
            .pointer("/privacy/target_epsilon")
            .and_then(|v| v.as_f64());
        out.line(&format!(
            "  privacy   ε = {e:.4}{} at δ = {} ({} accountant; {} ledger entries, written before each round ran)",
            target.map(|t| format!(" of {t}")).unwrap_or_default(),
            first.delta.get(),
            first.accountant,
            ledger.len()
        ));
    }
    if let Some(s) = &job.summary
        && let Some(a) = s.get("final_accuracy").and_then(|v| v.as_f64())
    {
        let c = s.get("centralized_accuracy").and_then(|v| v.as_f64());
        out.line(&format!(
            "  accuracy  {:.3} final{}",
            a,
            c.map(|c| format!(", {c:.3} centralized yardstick"))
                .unwrap_or_default()
        ));
    }
    out.line(&out.bold(&format!(
        "{:>5}  {:<10}{:>7}{:>9}{:>9}{:>10}{:>9}  {}",
        "ROUND", "STATUS", "ACC", "LOSS", "CLIENTS", "UPLOAD", "MS", "MODEL / REASON"
    )));
    for r in &rounds {
        let detail = match r.status {
            RoundStatus::Committed => r
                .model_sha256
                .as_deref()
                .map(|s| s[..16].to_owned())
                .unwrap_or_default(),
            _ => r.reason.clone().unwrap_or_default(),
        };
        out.line(&format!(
            "{:>5}  {:<10}{:>7}{:>9}{:>9}{:>10}{:>9}  {}",
            r.round,
            r.status.as_str(),
            r.accuracy.map_or("-".into(), |a| format!("{a:.3}")),
            r.loss.map_or("-".into(), |l| format!("{l:.4}")),
            format!("{}/{}", r.participants, r.selected),
            human_bytes(r.upload_bytes),
            r.duration_ms,
            detail
        ));
    }
    Ok(())
}
