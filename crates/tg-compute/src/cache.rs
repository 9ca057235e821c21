//! The node's model cache: the model directories a node fetched itself
//! carry a mark, whose modification time is their last use, and the least
//! recently used are evicted to make room for a fetch within a bound. The
//! design decision: what may be deleted is decided by a mark the node wrote
//! when it created the directory, a plain file owned by the node's user,
//! never by a name or a path from the network; a directory the user filled
//! is never touched.

use std::path::{Path, PathBuf};

use tg_tasks::ModelSpec;

use crate::ComputeError;

/// The file that marks a model directory as fetched by the node (its
/// cache, which may be evicted); its modification time is the last use.
pub const FETCHED_MARK: &str = ".tensorguard-fetched";

/// Records a use of the model in `dir` (for LRU eviction), if the node
/// fetched it and its mark is a plain file of this user (never a link or a
/// FIFO, which could block the caller). Blocking: call it off the event loop.
pub fn touch(dir: &Path) {
    let mark = dir.join(FETCHED_MARK);
    if is_mark(&mark)
        && let Ok(f) = std::fs::OpenOptions::new().append(true).open(&mark)
    {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Whether `mark` is the node's mark: a plain file (not followed through a
/// link) owned by the user the node runs as.
fn is_mark(mark: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(mark)
        .is_ok_and(|m| m.file_type().is_file() && m.uid() == rustix::process::getuid().as_raw())
}

/// The model directories under `root` that the node fetched: last use,
/// bytes, directory name, path.
fn fetched_dirs(
    root: &Path,
) -> std::io::Result<Vec<(std::time::SystemTime, u64, String, PathBuf)>> {
    let mut dirs = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dirs),
        Err(e) => return Err(e),
    };
    for e in entries {
        let Ok(e) = e else { continue };
        // A real directory (not a link to one) carrying the node's mark;
        // anything else is the user's and never evicted.
        let mark = e.path().join(FETCHED_MARK);
        if !e.file_type().is_ok_and(|t| t.is_dir()) || !is_mark(&mark) {
            continue;
        }
        let Ok(used) = std::fs::symlink_metadata(&mark).and_then(|m| m.modified()) else {
            continue;
        };
        let Ok(files) = std::fs::read_dir(e.path()) else {
            continue;
        };
        let size = files
            .filter_map(|f| f.ok()?.metadata().ok())
            .fold(0u64, |n, m| n.saturating_add(m.len()));
        dirs.push((
            used,
            size,
            e.file_name().to_string_lossy().into_owned(),
            e.path(),
        ));
    }
    Ok(dirs)
}

/// Makes room under `root` for `spec` within `max_bytes` of fetched
/// models: evicts the least recently used fetched model directories (never
/// `spec`'s own, never one the node did not fetch) until the others and
/// `spec` fit. Returns the names evicted, or an error when `spec` alone is
/// larger than the bound.
pub fn make_room(
    root: &Path,
    spec: &ModelSpec,
    max_bytes: u64,
) -> Result<Vec<String>, ComputeError> {
    let need: u64 = spec.files.iter().map(|f| f.size).sum();
    if need > max_bytes {
        return Err(ComputeError::Artifact(format!(
            "{} needs {} MiB and the model cache is bounded at {} MiB",
            spec.dir,
            need.div_ceil(1 << 20),
            max_bytes >> 20
        )));
    }
    let io = |e: std::io::Error| ComputeError::Io(format!("{}: {e}", root.display()));
    let mut dirs: Vec<_> = fetched_dirs(root)
        .map_err(io)?
        .into_iter()
        .filter(|d| d.2 != spec.dir)
        .collect();
    dirs.sort_by_key(|d| d.0);
    let mut total: u64 = dirs.iter().fold(0u64, |n, d| n.saturating_add(d.1));
    let mut removed = Vec::new();
    for (_, size, name, path) in dirs {
        if total.saturating_add(need) <= max_bytes {
            break;
        }
        std::fs::remove_dir_all(&path).map_err(io)?;
        total = total.saturating_sub(size);
        removed.push(name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tg_tasks::MINILM;

    use super::*;

    fn model_dir(root: &Path, name: &str, bytes: usize, fetched_secs_ago: Option<u64>) {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("weights.bin"), vec![0u8; bytes]).unwrap();
        if let Some(ago) = fetched_secs_ago {
            let f = std::fs::File::create(d.join(FETCHED_MARK)).unwrap();
            f.set_modified(std::time::SystemTime::now() - Duration::from_secs(ago))
                .unwrap();
        }
    }

    #[test]
    fn only_fetched_models_are_evicted_least_recently_used_first() {
        let root = tempfile::tempdir().unwrap();
        let need: u64 = MINILM.files.iter().map(|f| f.size).sum();
        model_dir(root.path(), "users-own", 1000, None);
        model_dir(root.path(), "old", 100, Some(3600));
        model_dir(root.path(), "recent", 100, Some(10));
        // The model being fetched (partly here) is never evicted for itself.
        model_dir(root.path(), MINILM.dir, 100, Some(7200));
        // Room for the model and one of the two others (the user's does not count).
        let removed = make_room(root.path(), &MINILM, need + 150).unwrap();
        assert_eq!(removed, vec!["old".to_string()]);
        for kept in ["users-own", "recent", MINILM.dir] {
            assert!(root.path().join(kept).is_dir(), "{kept} was evicted");
        }
        // Room for the model alone: every fetched model but its own goes,
        // the user's stays.
        let removed = make_room(root.path(), &MINILM, need).unwrap();
        assert_eq!(removed, vec!["recent".to_string()]);
        assert!(root.path().join("users-own").is_dir());
        // A use moves a model to the back of the queue.
        model_dir(root.path(), "a", 100, Some(3600));
        model_dir(root.path(), "b", 100, Some(60));
        touch(&root.path().join("a"));
        let removed = make_room(root.path(), &MINILM, need + 150).unwrap();
        assert_eq!(removed, vec!["b".to_string()]);
        // A link is never followed: neither a linked directory nor a
        // directory whose mark is a link (to a file of the node's) is evicted.
        model_dir(root.path(), "linked-mark", 100, None);
        std::os::unix::fs::symlink(
            root.path().join("a").join(FETCHED_MARK),
            root.path().join("linked-mark").join(FETCHED_MARK),
        )
        .unwrap();
        std::os::unix::fs::symlink(root.path().join("a"), root.path().join("linked-dir")).unwrap();
        let removed = make_room(root.path(), &MINILM, need).unwrap();
        assert_eq!(removed, vec!["a".to_string()]);
        assert!(root.path().join("linked-mark").is_dir());
        assert!(std::fs::symlink_metadata(root.path().join("linked-dir")).is_ok());
        // A missing models directory has nothing to evict.
        assert!(
            make_room(&root.path().join("absent"), &MINILM, need)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_cache_bound_below_the_model_is_refused_with_its_sizes() {
        let root = tempfile::tempdir().unwrap();
        let e = make_room(root.path(), &MINILM, 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bounded at 1 MiB"), "{e}");
    }
}
