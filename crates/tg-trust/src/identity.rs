//! The node's long-lived Ed25519 key, sealed at rest.

use std::fmt;
use std::io::Write;
use std::path::Path;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::passphrase::Passphrase;
use crate::sealed::{self, KdfParams, SealedFile};
use crate::{Result, TrustError, read_private};

/// First line of the unencrypted key files written before keys were
/// sealed; loading one is refused with instructions.
const LEGACY_TAG: &str = "tensorguard-ed25519-identity-v1";

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

    /// A second handle on the same secret (both zeroize on drop), for a
    /// component that must own its signer — the audit log — when the key is
    /// already unsealed: re-reading the file would cost another Argon2id run.
    pub fn try_clone(&self) -> Self {
        Self {
            signing: self.signing.clone(),
        }
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

    /// Seals the key under `pass` into a *new* file with mode 0600. With
    /// `overwrite`, an existing file is replaced atomically.
    pub fn save(&self, path: &Path, pass: &Passphrase, overwrite: bool) -> Result<()> {
        self.save_with(path, pass, overwrite, KdfParams::default())
    }

    /// [`IdentityKey::save`] with explicit KDF costs.
    pub fn save_with(
        &self,
        path: &Path,
        pass: &Passphrase,
        overwrite: bool,
        kdf: KdfParams,
    ) -> Result<()> {
        if path.exists() && !overwrite {
            return Err(TrustError::Exists(path.to_owned()));
        }
        let seed = Zeroizing::new(self.signing.to_bytes());
        let body = sealed::seal(
            seed.as_ref(),
            &format!("ed25519:{}", self.public_hex()),
            pass,
            kdf,
        )?;
        write_private(path, body.as_bytes())
    }

    /// Loads a sealed key file, refusing one that others can read.
    pub fn load(path: &Path, pass: &Passphrase) -> Result<Self> {
        let text = read_private(path)?;
        if text.starts_with(LEGACY_TAG) {
            return Err(TrustError::Unsealed(path.to_owned()));
        }
        let file = SealedFile::parse(&text).map_err(|_| TrustError::Malformed(path.to_owned()))?;
        let secret = file.open(pass)?;
        let seed: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| TrustError::Malformed(path.to_owned()))?;
        let key = Self {
            signing: SigningKey::from_bytes(&seed),
        };
        if file.label != format!("ed25519:{}", key.public_hex()) {
            return Err(TrustError::Malformed(path.to_owned()));
        }
        Ok(key)
    }

    /// Reads the public key of a sealed key file without the passphrase.
    pub fn peek_public(path: &Path) -> Result<String> {
        let text = std::fs::read_to_string(path).map_err(|source| TrustError::Io {
            path: path.to_owned(),
            source,
        })?;
        let file = SealedFile::parse(&text).map_err(|_| TrustError::Malformed(path.to_owned()))?;
        file.label
            .strip_prefix("ed25519:")
            .map(str::to_owned)
            .ok_or_else(|| TrustError::Malformed(path.to_owned()))
    }

    /// Converts a legacy unencrypted key file into a sealed one, in place.
    pub fn seal_legacy(path: &Path, pass: &Passphrase) -> Result<Self> {
        let text = read_private(path)?;
        let mut lines = text.lines();
        if lines.next() != Some(LEGACY_TAG) {
            return Err(TrustError::Malformed(path.to_owned()));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        lines
            .next()
            .and_then(|l| hex::decode_to_slice(l.trim(), seed.as_mut()).ok())
            .ok_or_else(|| TrustError::Malformed(path.to_owned()))?;
        let key = Self {
            signing: SigningKey::from_bytes(&seed),
        };
        key.save(path, pass, true)?;
        Ok(key)
    }
}

/// Writes `bytes` to `path` through a temporary file created with mode
/// 0600, synced, then renamed: never half-written, never briefly readable.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| TrustError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp).map_err(io)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Verifier;

    fn pass() -> Passphrase {
        Passphrase::new("test passphrase".into()).unwrap()
    }

    /// The cheapest derivation a file may carry: fast tests.
    const FAST: KdfParams = KdfParams::FLOOR;

    #[test]
    fn save_load_sign_verify() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.key");
        let k = IdentityKey::generate().unwrap();
        k.save_with(&p, &pass(), false, FAST).unwrap();
        assert!(matches!(
            k.save_with(&p, &pass(), false, FAST),
            Err(TrustError::Exists(_))
        ));
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            !text.contains(&hex::encode(k.signing.to_bytes())),
            "secret on disk in the clear"
        );
        assert_eq!(IdentityKey::peek_public(&p).unwrap(), k.public_hex());
        let back = IdentityKey::load(&p, &pass()).unwrap();
        assert_eq!(back.public(), k.public());
        let sig = back.sign(b"hello");
        assert!(k.public().verify(b"hello", &sig).is_ok());
        assert!(!format!("{k:?}").contains(&hex::encode(k.signing.to_bytes())));
        let wrong = Passphrase::new("nope".into()).unwrap();
        assert!(matches!(
            IdentityKey::load(&p, &wrong),
            Err(TrustError::WrongPassphrase)
        ));
    }

    #[cfg(unix)]
    #[test]
    fn refuses_readable_keys_garbage_and_plaintext() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("id.key");
        IdentityKey::generate()
            .unwrap()
            .save_with(&p, &pass(), false, FAST)
            .unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            IdentityKey::load(&p, &pass()),
            Err(TrustError::InsecurePermissions { mode: 0o640, .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, "garbage").unwrap();
        assert!(matches!(
            IdentityKey::load(&p, &pass()),
            Err(TrustError::Malformed(_))
        ));
        // A legacy plaintext key is refused, then sealed in place.
        std::fs::write(&p, format!("{LEGACY_TAG}\n{}\n", "11".repeat(32))).unwrap();
        assert!(matches!(
            IdentityKey::load(&p, &pass()),
            Err(TrustError::Unsealed(_))
        ));
        let k = IdentityKey::seal_legacy(&p, &pass()).unwrap();
        assert_eq!(IdentityKey::load(&p, &pass()).unwrap().public(), k.public());
    }
}
