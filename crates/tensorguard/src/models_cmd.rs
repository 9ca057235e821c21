//! `tensorguard models list|show|rollback`: a job's model registry.

use std::path::Path;

use serde_json::json;
use tg_store::{ModelVersion, Store};

use crate::cli::ModelsCommand;
use crate::errors::{UserError, from_store, invalid};
use crate::output::Output;

fn when(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn metric(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// The versions' success rate on the fleet, when agents judged it.
fn fleet_success(v: &ModelVersion) -> Option<f64> {
    v.gate.as_ref().map(|g| g.candidate.rate())
}

pub fn run(cmd: ModelsCommand, dir: &Path, out: &Output) -> Result<(), UserError> {
    let mut store = Store::open_existing(dir).map_err(|e| from_store(e, dir))?;
    match cmd {
        ModelsCommand::List { run } => list(&store, dir, &run, out),
        ModelsCommand::Show { run, digest } => show(&store, dir, &run, &digest, out),
        ModelsCommand::Rollback {
            run,
            digest,
            reason,
        } => rollback(&mut store, dir, &run, &digest, &reason, out),
    }
}

fn list(store: &Store, dir: &Path, run: &str, out: &Output) -> Result<(), UserError> {
    let job = store.find_job(run).map_err(|e| from_store(e, dir))?;
    let versions = store
        .model_versions(&job.id)
        .map_err(|e| from_store(e, dir))?;
    let rollbacks = store.rollbacks(&job.id).map_err(|e| from_store(e, dir))?;
    let head = store.model_head(&job.id).map_err(|e| from_store(e, dir))?;
    if out.json {
        out.json_value(&json!({
            "run_id": job.id,
            "head": head,
            "versions": versions,
            "rollbacks": rollbacks,
        }));
        return Ok(());
    }
    if versions.is_empty() {
        out.line(&format!(
            "run {} has no committed model yet: its next round starts from its initial model",
            short(&job.id)
        ));
        return Ok(());
    }
    out.line(&out.bold(&format!(
        "{:<2}{:<14}{:>6}  {:<14}{:>9}{:>8}{:>8}{:>9}  {}",
        "", "VERSION", "ROUND", "PARENT", "BYTES", "ACC", "ε", "SUCCESS", "COMMITTED"
    )));
    for (i, v) in versions.iter().enumerate() {
        // Rounds recorded before the registry existed have no parent.
        let parent = match (&v.parent_sha256, i) {
            (Some(p), _) => short(p),
            (None, 0) => "(initial)",
            (None, _) => "(not recorded)",
        };
        out.line(&format!(
            "{:<2}{:<14}{:>6}  {:<14}{:>9}{:>8}{:>8}{:>9}  {}",
            if v.head { "*" } else { "" },
            short(&v.sha256),
            v.round,
            parent,
            crate::demo::human_bytes(v.bytes),
            metric(v.accuracy, 3),
            metric(v.epsilon, 2),
            fleet_success(v).map_or_else(|| "-".into(), |s| format!("{:.1}%", 100.0 * s)),
            when(v.created_at_ms),
        ));
    }
    for r in &rollbacks {
        out.line(&format!(
            "rolled back {} → {} by {} at {}: {}",
            r.from_sha256.as_deref().map_or("(initial)", short),
            short(&r.sha256),
            r.actor,
            when(r.at_ms),
            r.reason
        ));
    }
    out.note("* marks the head: the version the job's next round starts from");
    Ok(())
}

fn show(
    store: &Store,
    dir: &Path,
    run: &str,
    version: &str,
    out: &Output,
) -> Result<(), UserError> {
    let job = store.find_job(run).map_err(|e| from_store(e, dir))?;
    let v = store
        .find_version(&job.id, version)
        .map_err(|e| from_store(e, dir))?;
    if out.json {
        out.json_value(&json!({"run_id": job.id, "version": v}));
        return Ok(());
    }
    out.line(&format!("{} {}", out.bold("version"), v.sha256));
    out.line(&format!("  run        {}", job.id));
    out.line(&format!(
        "  round      {}{}",
        v.round,
        if v.head { " (head)" } else { "" }
    ));
    out.line(&format!(
        "  parent     {}",
        v.parent_sha256
            .as_deref()
            .unwrap_or("(the job's initial model)")
    ));
    out.line(&format!(
        "  size       {}",
        crate::demo::human_bytes(v.bytes)
    ));
    out.line(&format!("  committed  {}", when(v.created_at_ms)));
    out.line(&format!(
        "  held-out   accuracy {}, loss {}",
        metric(v.accuracy, 4),
        metric(v.loss, 4)
    ));
    if let Some(e) = v.epsilon {
        out.line(&format!("  privacy    ε = {e:.4} after this round"));
    }
    if let Some(f) = &v.federated {
        out.line(&format!(
            "  fleet      accuracy {:.4}, loss {:.4} on {} examples ({} of {} agents answered)",
            f.accuracy, f.loss, f.num_examples, f.answered, f.asked
        ));
    }
    if let Some(g) = &v.gate {
        out.line(&format!("  gate       {g}"));
    }
    out.note(&format!(
        "download it with GET /api/v1/models/{} (safetensors)",
        v.sha256
    ));
    Ok(())
}

fn rollback(
    store: &mut Store,
    dir: &Path,
    run: &str,
    version: &str,
    reason: &str,
    out: &Output,
) -> Result<(), UserError> {
    if let Err(why) = tg_store::registry::check_reason(reason) {
        return Err(invalid(
            "--reason is not usable",
            format!(
                "{why}; a rollback is audited and an auditor reads why the fleet was moved back"
            ),
            "pass --reason \"…\" (one line of text)",
        ));
    }
    let reason = reason.trim();
    let job = store.find_job(run).map_err(|e| from_store(e, dir))?;
    if let Some(why) = tg_coordinator::service::audit::rollback_refused_for(&job.spec) {
        return Err(from_store(tg_store::StoreError::Refused(why), dir));
    }
    let target = store
        .find_version(&job.id, version)
        .map_err(|e| from_store(e, dir))?;
    // The audit log is opened (and its signer unsealed) before anything
    // changes: a rollback that cannot be audited does not happen.
    let pass = crate::keys::passphrase()?;
    let identity = tg_trust::node::identity(dir, None, &pass).map_err(crate::errors::from_trust)?;
    let ring = crate::keys::keyring(dir)?;
    let log = tg_trust::node::open_audit_as(dir, &ring, &pass, &identity)
        .map_err(crate::errors::from_trust)?;
    let actor = local_user();
    let done = store
        .rollback_model(&job.id, &target.sha256, reason, &actor, |r| {
            let event = tg_coordinator::service::audit::model_rolled_back(r, target.round);
            log.append(
                event.kind(),
                Some(&job.id),
                event.body(),
                tg_trust::audit::now_secs(),
            )
            .map(drop)
            .map_err(|e| e.to_string())
        })
        .map_err(|e| from_store(e, dir))?;
    if out.json {
        out.json_value(&json!({"run_id": job.id, "rollback": done, "round": target.round}));
        return Ok(());
    }
    out.line(&format!(
        "run {}: head moved from {} to {} (round {}); the next round starts from it",
        short(&job.id),
        done.from_sha256.as_deref().map_or("(initial)", short),
        short(&done.sha256),
        target.round
    ));
    out.note(
        "a running coordinator picks it up before its next round; audited as model.rolled_back",
    );
    Ok(())
}

/// The user this process runs as, from the kernel (not `$USER`, which the
/// caller sets): `uid N (name)`.
fn local_user() -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "local user (uid unknown)".into();
    };
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid.to_string()).then(|| name.to_owned())
        })
    });
    match name {
        Some(n) => format!("local uid {uid} ({n})"),
        None => format!("local uid {uid}"),
    }
}
