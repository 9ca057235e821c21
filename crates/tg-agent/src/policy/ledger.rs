//! The owner's ledger: what this agent's data has spent, and the rounds it
//! trained, kept across jobs and restarts under an exclusive lock.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tg_privacy::Delta;

use super::{AGENT_LEDGER, orders};

/// What this agent has spent, per dataset, and which rounds it trained.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OwnerLedger {
    /// SHA-256 of the dataset this ledger covers.
    pub dataset: String,
    /// Σ RDP at [`orders`] of every round charged.
    pub rdp: Vec<f64>,
    /// Whether a round without DP noise against the coordinator was run.
    pub unbounded: bool,
    /// `job/round` of every round trained: none is trained twice.
    pub trained: BTreeSet<String>,
    #[serde(skip)]
    path: Option<PathBuf>,
    /// An exclusive lock on the ledger, held while this process uses it, so
    /// two agents on one data directory cannot each spend the budget.
    #[serde(skip)]
    lock: Option<std::sync::Arc<std::fs::File>>,
}

impl OwnerLedger {
    /// An in-memory ledger (simulations and tests).
    pub fn in_memory(dataset: String) -> Self {
        Self {
            dataset,
            rdp: vec![0.0; orders().len()],
            ..Self::default()
        }
    }

    /// The ledger of `dataset` in `dir` (created if absent).
    pub fn open(dir: &Path, dataset: String) -> Result<Self, String> {
        let path = dir.join(format!(
            "privacy-ledger-{}.json",
            &dataset[..16.min(dataset.len())]
        ));
        // One lock for the directory, whatever the scope: two agents on one
        // data directory can never each spend its budget, and the merge
        // below reads the other ledgers under it.
        let lock_path = dir.join("privacy-ledger.lock");
        let lock = open_plain(
            &lock_path,
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true),
        )
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        lock.try_lock().map_err(|_| {
            format!(
                "{}: another agent is using this dataset's privacy ledger (one agent per data directory)",
                lock_path.display()
            )
        })?;
        let lock = std::sync::Arc::new(lock);
        // Once a directory's budget is agent-wide it stays so: a per-dataset
        // ledger opened after it would not see what the agent-wide one spent.
        if dataset != AGENT_LEDGER
            && dir
                .join(format!("privacy-ledger-{AGENT_LEDGER}.json"))
                .exists()
        {
            return Err(format!(
                "{}: this directory's budget is agent-wide (privacy-ledger-{AGENT_LEDGER}.json exists); remove budget_scope = \"dataset\" from the policy",
                dir.display()
            ));
        }
        let mut ledger = match read_ledger_file(&path) {
            Ok(bytes) => Self::parse(&path, &bytes)?,
            // A new agent-wide ledger starts from everything the per-dataset
            // ledgers of this directory spent: a change of scope never
            // resets a budget.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dataset == AGENT_LEDGER => {
                Self::merged_from(dir, &path)?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::in_memory(dataset.clone()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if ledger.dataset != dataset || ledger.rdp.len() != orders().len() {
            return Err(format!(
                "{}: the ledger belongs to another dataset or version",
                path.display()
            ));
        }
        ledger.path = Some(path);
        ledger.lock = Some(lock);
        Ok(ledger)
    }

    /// An agent-wide ledger composed of every other ledger in `dir`
    /// (their RDP added, their trained rounds united): conservative, since
    /// composition over-counts disjoint data but never under-counts.
    fn merged_from(dir: &Path, own: &Path) -> Result<Self, String> {
        let mut merged = Self::in_memory(AGENT_LEDGER.to_owned());
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(merged),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        for entry in entries {
            let path = entry.map_err(|e| e.to_string())?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path == own || !name.starts_with("privacy-ledger-") || !name.ends_with(".json") {
                continue;
            }
            let bytes = read_ledger_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let old = Self::parse(&path, &bytes)?;
            if old.rdp.len() != merged.rdp.len() {
                return Err(format!(
                    "{}: a ledger of another version; move it aside only if its data will never be served again",
                    path.display()
                ));
            }
            for (m, o) in merged.rdp.iter_mut().zip(&old.rdp) {
                *m += o;
            }
            merged.unbounded |= old.unbounded;
            merged.trained.extend(old.trained);
        }
        Ok(merged)
    }

    /// A ledger's JSON, refused unless every RDP value is finite and not
    /// negative (a negative value would hand back spent budget).
    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, String> {
        let ledger: Self =
            serde_json::from_slice(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(bad) = ledger.rdp.iter().find(|r| !r.is_finite() || **r < 0.0) {
            return Err(format!(
                "{}: an RDP value of {bad} (spending is never negative or unbounded here): the ledger was altered; restore it from a backup",
                path.display()
            ));
        }
        Ok(ledger)
    }

    pub(super) fn save(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("json.tmp");
        // A fresh file, never a link someone planted at the temporary name.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {e}", tmp.display()));
            }
            _ => {}
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()
            })
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
        // The rename itself must survive a power loss.
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(())
    }

    /// ε of this dataset so far at `delta` (∞ after a round without DP).
    pub fn epsilon(&self, delta: Delta) -> f64 {
        if self.unbounded {
            return f64::INFINITY;
        }
        if self.rdp.iter().all(|r| *r == 0.0) {
            return 0.0;
        }
        let o: Vec<f64> = orders().iter().map(|&a| a as f64).collect();
        tg_privacy::rdp_to_epsilon(&o, &self.rdp, delta).0
    }
}

/// Most bytes a ledger file may hold (a million trained rounds fit).
const MAX_LEDGER_BYTES: u64 = 256 << 20;

/// Opens `path` without following a final link and without waiting on a
/// pipe (`O_NOFOLLOW | O_NONBLOCK`); what was opened is checked after.
fn open_plain(path: &Path, options: &mut std::fs::OpenOptions) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK;
    let file = options
        .custom_flags(flags.bits() as i32)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                std::io::Error::other(NOT_PLAIN)
            } else {
                e
            }
        })?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::other(NOT_PLAIN));
    }
    Ok(file)
}

const NOT_PLAIN: &str = "not a regular file (a link, device or pipe): privacy ledgers must be plain files in the data directory; move it aside";

/// A ledger file's bytes: a regular file (not followed through a link) of
/// at most [`MAX_LEDGER_BYTES`]; `NotFound` passes through.
fn read_ledger_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = open_plain(path, std::fs::OpenOptions::new().read(true))?;
    // What was opened, not what the path named a moment before.
    let opened = file.metadata()?;
    if !opened.file_type().is_file() || opened.len() > MAX_LEDGER_BYTES {
        return Err(std::io::Error::other(format!(
            "not a regular file of at most {MAX_LEDGER_BYTES} bytes; move it aside"
        )));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_LEDGER_BYTES + 1),
        &mut bytes,
    )?;
    if bytes.len() as u64 > MAX_LEDGER_BYTES {
        return Err(std::io::Error::other(format!(
            "more than a ledger holds ({MAX_LEDGER_BYTES} bytes); move it aside"
        )));
    }
    Ok(bytes)
}
