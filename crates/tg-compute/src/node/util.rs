//! Small helpers of the node: its lock files, reachability, the clock, and
//! peers' keys.

use std::collections::HashMap;

use tg_net::PeerId;

use crate::ComputeError;

/// Takes a lock file (mode 0600) for the node's life, or says who holds it.
pub(super) fn lock_file(path: &std::path::Path) -> Result<std::fs::File, ComputeError> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| ComputeError::Io(format!("{}: {e}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ComputeError::Io(format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(ComputeError::StoreInUse(path.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(ComputeError::Io(format!(
            "cannot lock {} ({e}); a data directory on a filesystem without file locks is not supported",
            path.display()
        ))),
    }
}

/// What `status` says: relayed while a relay holds a reservation and AutoNAT
/// does not say public; otherwise what AutoNAT said.
pub(super) fn reachability(nat: &'static str, relayed: bool) -> &'static str {
    if nat != "public" && relayed {
        "relayed"
    } else {
        nat
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Keys decoded so far, per thread: decoding checks the point on the curve
/// (tens of µs), and the assignment pass asks for every sampled peer's key.
/// Bounded: cleared when full, so a flood of identities costs only re-decoding.
const KEY_MEMO: usize = 4096;

pub(super) fn key_of(peer: &PeerId) -> Option<[u8; 32]> {
    thread_local! {
        static KEYS: std::cell::RefCell<HashMap<PeerId, Option<[u8; 32]>>> =
            std::cell::RefCell::new(HashMap::new());
    }
    KEYS.with(|keys| {
        if let Some(k) = keys.borrow().get(peer) {
            return *k;
        }
        let k = tg_net::ed25519_key_of(peer);
        let mut keys = keys.borrow_mut();
        if keys.len() >= KEY_MEMO {
            keys.clear();
        }
        keys.insert(*peer, k);
        k
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn reachability_is_public_then_relayed_then_what_autonat_said() {
        use super::reachability;
        assert_eq!(reachability("public", true), "public");
        assert_eq!(reachability("private", true), "relayed");
        assert_eq!(reachability("unknown", true), "relayed");
        assert_eq!(reachability("private", false), "private");
        assert_eq!(reachability("unknown", false), "unknown");
    }
}
