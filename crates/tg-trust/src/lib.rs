//! Trust: node keys sealed at rest, their history, HSM-held keys, and a
//! tamper-evident audit log.
//!
//! Design decision: secrets have one owner type each — [`IdentityKey`]
//! (zeroized on drop, no `Debug` of its bytes) and [`Passphrase`] — and can
//! only reach the disk sealed (Argon2id + XChaCha20-Poly1305, see
//! [`sealed`]) in files created with mode 0600; loading refuses a key file
//! that group or others can read, because a leaked identity lets anyone
//! impersonate the node in every federation it joins. Public history (who
//! held which key when) lives in the [`keyring`], apart from the secrets, so
//! auditors can verify without the passphrase. Everything that signs for
//! the node goes through [`NodeSigner`], so an HSM key (feature `pkcs11`)
//! and a file key are interchangeable for the audit log.

pub mod audit;
pub mod fleet_root;
mod identity;
pub mod keyring;
pub mod node;
pub mod passphrase;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod sealed;
mod signer;

pub use identity::IdentityKey;
pub use keyring::{KeyRecord, KeyStatus, Keyring, Purpose, Storage};
pub use passphrase::Passphrase;
pub use signer::NodeSigner;

use std::path::{Path, PathBuf};

/// Errors handling keys and the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A key file already exists and overwriting was not allowed.
    #[error("{0} already exists")]
    Exists(PathBuf),
    /// A key file is readable by group or others.
    #[error("{path} is readable by other users (mode {mode:o})")]
    InsecurePermissions {
        /// Key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not an identity key.
    #[error("{0} is not a TensorGuard identity key file")]
    Malformed(PathBuf),
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The operating system's random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    Rng(String),
    /// A cryptographic primitive failed.
    #[error("crypto: {0}")]
    Crypto(String),
    /// A sealed file is malformed.
    #[error("sealed secret: {0}")]
    Sealed(String),
    /// The passphrase does not open the sealed secret (or the file was altered).
    #[error("the passphrase does not open this key (wrong passphrase, or the file was altered)")]
    WrongPassphrase,
    /// No passphrase is available.
    #[error("no key passphrase: {0}")]
    NoPassphrase(String),
    /// A key file from before keys were sealed.
    #[error("{0} is an unencrypted key file")]
    Unsealed(PathBuf),
    /// Keyring bookkeeping failed.
    #[error("keyring: {0}")]
    Keyring(String),
    /// The PKCS#11 module or token failed.
    #[error("PKCS#11: {0}")]
    Pkcs11(String),
    /// The audit log could not be written or read.
    #[error("audit log: {0}")]
    Audit(String),
    /// A key file named explicitly does not exist (keys named on the
    /// command line are never created implicitly).
    #[error("identity key {} does not exist", .0.display())]
    NoKeyFile(PathBuf),
    /// A PKCS#11 key is needed and no PIN was given.
    #[error("no PKCS#11 PIN")]
    NoPin,
    /// The keyring holds no active key to sign the audit log.
    #[error("this node has no key to sign its audit log")]
    NoSigner,
}

/// Result alias for this crate.
pub type Result<T, E = TrustError> = std::result::Result<T, E>;

/// Reads a secret text file, refusing one that others can read.
pub(crate) fn read_private(path: &Path) -> Result<zeroize::Zeroizing<String>> {
    check_private(path)?;
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|source| TrustError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Fails when `path` is readable or writable by group or others.
pub fn check_private(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|source| TrustError::Io {
        path: path.to_owned(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TrustError::InsecurePermissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}
