//! The keyring: which keys a node has held, for what, and when each was valid.
//!
//! Design decision: secrets and history are kept apart. Each secret lives
//! in its own sealed file (or in an HSM); `keyring.json` holds only public
//! facts — public key, purpose, validity window, status, where the secret
//! is — so `keys list` and signature verification never need the
//! passphrase. A rotated key is *retired*, not deleted: its public key and
//! window stay so signatures it made (audit entries, old rounds) still
//! verify, and only signatures dated inside its window do.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{IdentityKey, write_private};
use crate::passphrase::Passphrase;
use crate::sealed::KdfParams;
use crate::{Result, TrustError};

/// What a key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Purpose {
    /// The node's network identity (libp2p peer id, signed frames).
    Identity,
    /// Signs the audit log (may live in an HSM).
    Audit,
}

impl Purpose {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Identity => "identity",
            Purpose::Audit => "audit",
        }
    }
}

/// Where a key's secret half is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Storage {
    /// A sealed file in the keyring directory.
    File {
        /// File name inside the keyring directory.
        file: String,
    },
    /// A PKCS#11 token.
    Pkcs11 {
        /// Path of the PKCS#11 module.
        module: PathBuf,
        /// Token label.
        token: String,
        /// Object label of the key pair on the token.
        label: String,
    },
}

/// Lifecycle state of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Signs now.
    Active,
    /// Rotated out: verifies signatures made inside its window.
    Retired,
    /// Compromised or withdrawn: verifies nothing made after revocation.
    Revoked,
}

/// Public facts about one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Short id: the first 16 hex digits of SHA-256(public key).
    pub id: String,
    /// What the key is for.
    pub purpose: Purpose,
    /// Ed25519 public key, hex.
    pub public_key: String,
    /// Valid from (Unix seconds).
    pub not_before: u64,
    /// Valid until (Unix seconds); `None` while active.
    pub not_after: Option<u64>,
    /// Status.
    pub status: KeyStatus,
    /// When and why it was revoked.
    pub revoked_at: Option<u64>,
    /// Revocation reason.
    pub revocation_reason: Option<String>,
    /// Where the secret is.
    pub storage: Storage,
}

impl KeyRecord {
    /// Whether a signature made at `t` by this key is acceptable. Times are
    /// whole seconds, so the second of a rotation or revocation still counts
    /// (the event and what the key signed just before it share that second).
    pub fn valid_at(&self, t: u64) -> bool {
        t >= self.not_before
            && self.not_after.is_none_or(|end| t <= end)
            && self.revoked_at.is_none_or(|r| t <= r)
    }
}

/// Short id of a public key.
pub fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

#[derive(Default, Serialize, Deserialize)]
struct KeyringFile {
    version: u32,
    keys: Vec<KeyRecord>,
}

/// A directory of sealed keys plus `keyring.json`.
pub struct Keyring {
    dir: PathBuf,
    keys: Vec<KeyRecord>,
    kdf: KdfParams,
}

impl Keyring {
    /// Opens (or creates, mode 0700) a keyring directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let io = |source| TrustError::Io {
            path: dir.to_owned(),
            source,
        };
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io)?;
            }
        }
        let index = dir.join("keyring.json");
        let keys = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|source| TrustError::Io {
                path: index.clone(),
                source,
            })?;
            let file: KeyringFile = serde_json::from_str(&text)
                .map_err(|e| TrustError::Keyring(format!("{}: {e}", index.display())))?;
            file.keys
        } else {
            Vec::new()
        };
        Ok(Self {
            dir: dir.to_owned(),
            keys,
            kdf: KdfParams::default(),
        })
    }

    /// Uses other Argon2id costs for keys sealed from now on (tests use the
    /// floor to stay fast).
    pub fn with_kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }

    /// The keyring directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every key, oldest first.
    pub fn records(&self) -> &[KeyRecord] {
        &self.keys
    }

    /// The active key for `purpose`.
    pub fn active(&self, purpose: Purpose) -> Option<&KeyRecord> {
        self.keys
            .iter()
            .find(|k| k.purpose == purpose && k.status == KeyStatus::Active)
    }

    /// Finds a key by id (or unique id prefix) or full public key.
    pub fn find(&self, id: &str) -> Result<&KeyRecord> {
        let hits: Vec<_> = self
            .keys
            .iter()
            .filter(|k| k.id.starts_with(id) || k.public_key == id)
            .collect();
        match hits.as_slice() {
            [one] => Ok(one),
            [] => Err(TrustError::Keyring(format!("no key with id '{id}'"))),
            _ => Err(TrustError::Keyring(format!(
                "'{id}' matches {} keys; give more digits",
                hits.len()
            ))),
        }
    }

    fn save(&self) -> Result<()> {
        let file = KeyringFile {
            version: 1,
            keys: self.keys.clone(),
        };
        let text =
            serde_json::to_string_pretty(&file).map_err(|e| TrustError::Keyring(e.to_string()))?;
        write_private(&self.dir.join("keyring.json"), text.as_bytes())
    }

    /// Generates the first key for `purpose`, sealed under `pass`.
    pub fn generate(
        &mut self,
        purpose: Purpose,
        pass: &Passphrase,
        now: u64,
    ) -> Result<(KeyRecord, IdentityKey)> {
        if let Some(k) = self.active(purpose) {
            return Err(TrustError::Keyring(format!(
                "an active {} key already exists ({}); use rotate to replace it",
                purpose.as_str(),
                k.id
            )));
        }
        self.add_file_key(purpose, pass, now)
    }

    fn add_file_key(
        &mut self,
        purpose: Purpose,
        pass: &Passphrase,
        now: u64,
    ) -> Result<(KeyRecord, IdentityKey)> {
        let key = IdentityKey::generate()?;
        let id = key_id(key.public().as_bytes());
        let file = format!("{}-{id}.key", purpose.as_str());
        key.save_with(&self.dir.join(&file), pass, false, self.kdf)?;
        let rec = KeyRecord {
            id,
            purpose,
            public_key: key.public_hex(),
            not_before: now,
            not_after: None,
            status: KeyStatus::Active,
            revoked_at: None,
            revocation_reason: None,
            storage: Storage::File { file },
        };
        self.keys.push(rec.clone());
        self.save()?;
        Ok((rec, key))
    }

    /// Registers a key pair that lives on a PKCS#11 token.
    pub fn add_external(
        &mut self,
        purpose: Purpose,
        public: [u8; 32],
        storage: Storage,
        now: u64,
    ) -> Result<KeyRecord> {
        if let Some(k) = self.active(purpose) {
            return Err(TrustError::Keyring(format!(
                "an active {} key already exists ({}); rotate or revoke it first",
                purpose.as_str(),
                k.id
            )));
        }
        let rec = KeyRecord {
            id: key_id(&public),
            purpose,
            public_key: hex::encode(public),
            not_before: now,
            not_after: None,
            status: KeyStatus::Active,
            revoked_at: None,
            revocation_reason: None,
            storage,
        };
        self.keys.push(rec.clone());
        self.save()?;
        Ok(rec)
    }

    /// Replaces the active key for `purpose` with a new one. The old key
    /// is retired with `not_after = now` and kept for verification.
    /// Returns (old, new, new secret).
    pub fn rotate(
        &mut self,
        purpose: Purpose,
        pass: &Passphrase,
        now: u64,
    ) -> Result<(KeyRecord, KeyRecord, IdentityKey)> {
        let Some(pos) = self
            .keys
            .iter()
            .position(|k| k.purpose == purpose && k.status == KeyStatus::Active)
        else {
            return Err(TrustError::Keyring(format!(
                "no active {} key to rotate; generate one first",
                purpose.as_str()
            )));
        };
        // Prove the passphrase opens the current key before retiring it.
        if let Storage::File { file } = &self.keys[pos].storage {
            IdentityKey::load(&self.dir.join(file), pass)?;
        }
        self.keys[pos].status = KeyStatus::Retired;
        self.keys[pos].not_after = Some(now);
        let old = self.keys[pos].clone();
        let (new, secret) = self.add_file_key(purpose, pass, now)?;
        Ok((old, new, secret))
    }

    /// Revokes a key from `now` on. The active key cannot be revoked while
    /// it is the only one: rotate first, then revoke the old one.
    pub fn revoke(&mut self, id: &str, reason: &str, now: u64) -> Result<KeyRecord> {
        let target = self.find(id)?.id.clone();
        let Some(rec) = self.keys.iter_mut().find(|k| k.id == target) else {
            return Err(TrustError::Keyring(format!("no key with id '{id}'")));
        };
        if rec.status == KeyStatus::Revoked {
            return Err(TrustError::Keyring(format!(
                "key {} is already revoked",
                rec.id
            )));
        }
        if rec.status == KeyStatus::Active {
            return Err(TrustError::Keyring(format!(
                "key {} is the active {} key; run `keys rotate` first, then revoke it",
                rec.id,
                rec.purpose.as_str()
            )));
        }
        rec.status = KeyStatus::Revoked;
        rec.revoked_at = Some(now);
        rec.revocation_reason = Some(reason.to_owned());
        let out = rec.clone();
        self.save()?;
        Ok(out)
    }

    /// Loads the secret of the active file-backed key for `purpose`.
    pub fn load_active(&self, purpose: Purpose, pass: &Passphrase) -> Result<Option<IdentityKey>> {
        match self.active(purpose).map(|k| &k.storage) {
            Some(Storage::File { file }) => IdentityKey::load(&self.dir.join(file), pass).map(Some),
            Some(_) | None => Ok(None),
        }
    }

    /// Whether the active key for `purpose` is older than `max_age_secs`.
    pub fn rotation_due(&self, purpose: Purpose, max_age_secs: u64, now: u64) -> bool {
        self.active(purpose)
            .is_some_and(|k| now.saturating_sub(k.not_before) >= max_age_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cheapest derivation a file may carry: fast tests.
    const FAST: KdfParams = KdfParams::FLOOR;

    #[test]
    fn lifecycle_generate_rotate_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let pass = Passphrase::new("pw".into()).unwrap();
        let mut ring = Keyring::open(&dir.path().join("keys"))
            .unwrap()
            .with_kdf(FAST);
        let (first, _) = ring.generate(Purpose::Identity, &pass, 100).unwrap();
        assert!(ring.generate(Purpose::Identity, &pass, 101).is_err());
        assert!(
            ring.revoke(&first.id, "x", 102).is_err(),
            "active key revoked"
        );
        assert!(!ring.rotation_due(Purpose::Identity, 1000, 500));
        assert!(ring.rotation_due(Purpose::Identity, 1000, 1100));
        let (old, new, secret) = ring.rotate(Purpose::Identity, &pass, 200).unwrap();
        assert_eq!(old.id, first.id);
        assert_eq!(old.not_after, Some(200));
        assert_eq!(secret.public_hex(), new.public_key);
        // Reopen: history persisted, old key still verifies inside its window.
        let ring2 = Keyring::open(&dir.path().join("keys")).unwrap();
        let old = ring2.find(&first.id).unwrap();
        assert!(old.valid_at(150) && !old.valid_at(250) && !old.valid_at(50));
        assert_eq!(ring2.active(Purpose::Identity).unwrap().id, new.id);
        assert_eq!(
            ring2
                .load_active(Purpose::Identity, &pass)
                .unwrap()
                .unwrap()
                .public_hex(),
            new.public_key
        );
        let mut ring2 = ring2;
        let revoked = ring2.revoke(&first.id[..6], "laptop stolen", 180).unwrap();
        assert!(revoked.valid_at(150) && !revoked.valid_at(190));
        assert!(ring2.revoke(&first.id, "again", 190).is_err());
        // A wrong passphrase cannot rotate.
        let wrong = Passphrase::new("wrong".into()).unwrap();
        assert!(ring2.rotate(Purpose::Identity, &wrong, 300).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.path().join("keys")), 0o700);
            assert_eq!(mode(&dir.path().join("keys/keyring.json")), 0o600);
        }
    }
}
