//! Node identity: Ed25519 keys kept in files only their owner can read.
//!
//! Design decision: the secret key type is [`IdentityKey`] — it zeroizes on
//! drop, has no `Debug` output of its bytes, and can only be written to a new
//! file created with mode 0600. Loading refuses a key file that group or
//! others can read, because a leaked identity lets anyone impersonate the node
//! in every federation it joins. Encryption at rest and HSM-held keys come
//! with the key-management work; the file format carries a version for that.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

/// First token of an identity key file.
const FILE_TAG: &str = "tensorguard-ed25519-identity-v1";

/// Errors handling identity keys.
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
}

/// Result alias for this crate.
pub type Result<T, E = TrustError> = std::result::Result<T, E>;

/// A node's long-lived Ed25519 signing key. Zeroized on drop.
pub struct IdentityKey {
    signing: SigningKey,
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey(public {})", self.public_hex())
    }
}

impl IdentityKey {
    /// Draws a fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| TrustError::Rng(e.to_string()))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The signing key itself, for protocol code that signs with this
    /// identity (the network handshake and signed frames). Borrowed: the
    /// key stays owned, and zeroized, here.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The public verifying key.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key as 64 hex characters.
    pub fn public_hex(&self) -> String {
        hex::encode(self.public().as_bytes())
    }

    /// Signs a message.
    pub fn sign(&self, msg: &[u8]) -> ed25519_dalek::Signature {
        self.signing.sign(msg)
    }

    /// Writes the key to a *new* file with mode 0600. With `overwrite`, an
    /// existing file is replaced atomically (never left half-written).
    pub fn save(&self, path: &Path, overwrite: bool) -> Result<()> {
        if path.exists() && !overwrite {
            return Err(TrustError::Exists(path.to_owned()));
        }
        let io = |source| TrustError::Io {
            path: path.to_owned(),
            source,
        };
        let body = Zeroizing::new(format!(
            "{FILE_TAG}\n{}\n# public {}\n",
            hex::encode(self.signing.to_bytes()),
            self.public_hex()
        ));
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(body.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Loads a key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<Self> {
        let io = |source| TrustError::Io {
            path: path.to_owned(),
            source,
        };
        check_private(path)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let mut lines = text.lines();
        if lines.next() != Some(FILE_TAG) {
            return Err(TrustError::Malformed(path.to_owned()));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        lines
            .next()
            .and_then(|l| hex::decode_to_slice(l.trim(), seed.as_mut()).ok())
            .ok_or_else(|| TrustError::Malformed(path.to_owned()))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    #[test]
    fn save_load_sign_verify() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.key");
        let k = IdentityKey::generate().unwrap();
        k.save(&p, false).unwrap();
        assert!(matches!(k.save(&p, false), Err(TrustError::Exists(_))));
        let back = IdentityKey::load(&p).unwrap();
        assert_eq!(back.public(), k.public());
        let sig = back.sign(b"hello");
        assert!(k.public().verify(b"hello", &sig).is_ok());
        assert!(!format!("{k:?}").contains(&hex::encode(k.signing.to_bytes())));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_readable_keys_and_garbage() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.key");
        IdentityKey::generate().unwrap().save(&p, false).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            IdentityKey::load(&p),
            Err(TrustError::InsecurePermissions { .. })
        ));
        std::fs::write(&p, "nope").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            IdentityKey::load(&p),
            Err(TrustError::Malformed(_))
        ));
    }
}
