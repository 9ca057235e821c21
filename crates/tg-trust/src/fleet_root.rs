//! The fleet root: an operator's offline Ed25519 key that certifies agents'
//! identities, sealed at rest like every other key.
//!
//! Design decision: the root is a file of its own (never in a node's
//! keyring), because it must not live on the coordinator: agents pin it so
//! that the coordinator cannot vouch for identities of its own. It is
//! created once and never overwritten (that would orphan every
//! certificate); the certificate format is tg-proto's.

use std::path::Path;

use ed25519_dalek::SigningKey;
use zeroize::Zeroizing;

use crate::identity::write_private;
use crate::passphrase::Passphrase;
use crate::sealed::{KdfParams, SealedFile, seal};
use crate::{Result, TrustError};

/// The sealed file's label.
const LABEL: &str = "tensorguard fleet root";

/// Creates a fleet root sealed to `file` (mode 0600) under `pass`; returns
/// its public key. Refuses (`Exists`) if `file` exists.
pub fn create(file: &Path, pass: &Passphrase) -> Result<[u8; 32]> {
    create_with(file, pass, KdfParams::default())
}

/// [`create`] with explicit key-derivation cost (tests).
pub fn create_with(file: &Path, pass: &Passphrase, kdf: KdfParams) -> Result<[u8; 32]> {
    if file.exists() {
        return Err(TrustError::Exists(file.to_owned()));
    }
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut()).map_err(|e| TrustError::Rng(e.to_string()))?;
    let key = SigningKey::from_bytes(&secret);
    write_private(file, seal(secret.as_ref(), LABEL, pass, kdf)?.as_bytes())?;
    Ok(key.verifying_key().to_bytes())
}

/// Opens the fleet root sealed in `file`.
pub fn open(file: &Path, pass: &Passphrase) -> Result<SigningKey> {
    let text = std::fs::read_to_string(file).map_err(|source| TrustError::Io {
        path: file.to_owned(),
        source,
    })?;
    let secret = SealedFile::parse(&text)?.open(pass)?;
    let bytes: [u8; 32] = secret
        .as_slice()
        .try_into()
        .map_err(|_| TrustError::Malformed(file.to_owned()))?;
    Ok(SigningKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest derivation a file may carry: fast tests.
    const FAST: KdfParams = KdfParams::FLOOR;

    #[test]
    fn created_once_opened_with_its_passphrase_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("root.key");
        let pass = Passphrase::new("root passphrase".into()).unwrap();
        let public = create_with(&file, &pass, FAST).unwrap();
        assert_eq!(
            open(&file, &pass).unwrap().verifying_key().to_bytes(),
            public
        );
        assert!(matches!(
            create_with(&file, &pass, FAST),
            Err(TrustError::Exists(_))
        ));
        let wrong = Passphrase::new("another".into()).unwrap();
        assert!(matches!(
            open(&file, &wrong),
            Err(TrustError::WrongPassphrase)
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0);
        }
    }
}
