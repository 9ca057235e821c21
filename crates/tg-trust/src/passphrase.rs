//! Where a key passphrase comes from: the environment or a file, never argv.
//!
//! Design decision: command-line arguments are visible to every user via
//! `ps` and end up in shell history, so no command takes a passphrase as
//! an argument. `TENSORGUARD_KEY_PASSPHRASE_FILE` (a file only its owner can
//! read, e.g. a systemd credential) is preferred; the bare
//! `TENSORGUARD_KEY_PASSPHRASE` variable is accepted for CI and containers.

use std::path::Path;

use zeroize::Zeroizing;

use crate::{Result, TrustError, read_private};

/// Environment variable holding the passphrase itself.
pub const PASSPHRASE_ENV: &str = "TENSORGUARD_KEY_PASSPHRASE";
/// Environment variable naming a file that holds the passphrase.
pub const PASSPHRASE_FILE_ENV: &str = "TENSORGUARD_KEY_PASSPHRASE_FILE";

/// A key passphrase. Zeroized on drop; never printed.
pub struct Passphrase(Zeroizing<String>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(…)")
    }
}

impl Passphrase {
    /// Wraps a passphrase; empty ones are refused.
    pub fn new(s: String) -> Result<Self> {
        let s = Zeroizing::new(s);
        if s.trim().is_empty() {
            return Err(TrustError::NoPassphrase("the passphrase is empty".into()));
        }
        Ok(Self(s))
    }

    /// The passphrase text.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads the first line of a file that only its owner can read.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_private(path)?;
        Self::new(text.lines().next().unwrap_or("").to_owned())
    }

    /// From `TENSORGUARD_KEY_PASSPHRASE_FILE`, else
    /// `TENSORGUARD_KEY_PASSPHRASE`; `None` when neither is set.
    pub fn from_env() -> Result<Option<Self>> {
        if let Some(p) = std::env::var_os(PASSPHRASE_FILE_ENV).filter(|v| !v.is_empty()) {
            return Self::from_file(Path::new(&p)).map(Some);
        }
        match std::env::var(PASSPHRASE_ENV) {
            Ok(s) if !s.is_empty() => Self::new(s).map(Some),
            _ => Ok(None),
        }
    }

    /// Like [`Passphrase::from_env`], but a missing passphrase is an error.
    pub fn require() -> Result<Self> {
        Self::from_env()?.ok_or_else(|| {
            TrustError::NoPassphrase(format!(
                "keys are encrypted at rest; set {PASSPHRASE_FILE_ENV} to a file (mode 0600) holding the passphrase, or {PASSPHRASE_ENV}"
            ))
        })
    }
}
