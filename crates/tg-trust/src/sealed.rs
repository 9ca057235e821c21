//! Secrets encrypted at rest under a passphrase.
//!
//! Design decision: a sealed file is a few `key=value` text lines so an
//! operator can see what it is and how it was protected without the
//! passphrase, and every line but the ciphertext is authenticated as
//! associated data — raising the KDF cost, swapping the public key or
//! changing the salt all make opening fail rather than silently weakening
//! the file. The key-encryption key comes from Argon2id (64 MiB, 3 passes,
//! RFC 9106's second recommended setting); XChaCha20-Poly1305's 24-byte
//! nonce is drawn at random for every seal.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::passphrase::Passphrase;
use crate::{Result, TrustError};

/// First line of a sealed secret file.
pub const SEALED_TAG: &str = "tensorguard-sealed-secret-v1";

/// Argon2id cost parameters stored with each sealed secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    /// The weakest parameters a file may carry; anything cheaper is refused
    /// on open, so a tampered file cannot make brute force cheap.
    pub(crate) const FLOOR: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };

    fn derive(&self, pass: &Passphrase, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let params = Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| TrustError::Crypto(format!("argon2 parameters: {e}")))?;
        let mut kek = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(pass.expose().as_bytes(), salt, kek.as_mut())
            .map_err(|e| TrustError::Crypto(format!("argon2: {e}")))?;
        Ok(kek)
    }
}

/// Encrypts `secret` under `pass`; `label` (e.g. the public key) is bound
/// into the authenticated header. Returns the file text.
pub fn seal(secret: &[u8], label: &str, pass: &Passphrase, kdf: KdfParams) -> Result<String> {
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut salt).map_err(|e| TrustError::Rng(e.to_string()))?;
    getrandom::fill(&mut nonce).map_err(|e| TrustError::Rng(e.to_string()))?;
    let header = header(label, kdf, &salt, &nonce);
    let kek = kdf.derive(pass, &salt)?;
    let ct = XChaCha20Poly1305::new_from_slice(kek.as_ref())
        .map_err(|_| TrustError::Crypto("key length".into()))?
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: secret,
                aad: header.as_bytes(),
            },
        )
        .map_err(|_| TrustError::Crypto("encryption failed".into()))?;
    Ok(format!("{header}ciphertext={}\n", hex::encode(ct)))
}

fn header(label: &str, kdf: KdfParams, salt: &[u8], nonce: &[u8]) -> String {
    format!(
        "{SEALED_TAG}\nlabel={label}\nkdf=argon2id-v19 m={} t={} p={}\nsalt={}\ncipher=xchacha20poly1305\nnonce={}\n",
        kdf.m_kib,
        kdf.t,
        kdf.p,
        hex::encode(salt),
        hex::encode(nonce)
    )
}

/// A parsed sealed file, before the passphrase is applied.
#[derive(Clone, Debug)]
pub struct SealedFile {
    /// The label stored in the header.
    pub label: String,
    /// KDF parameters.
    pub kdf: KdfParams,
    salt: Vec<u8>,
    nonce: [u8; 24],
    ciphertext: Vec<u8>,
}

impl SealedFile {
    /// Parses the text of a sealed file.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| TrustError::Sealed(why.to_owned());
        let mut lines = text.lines();
        if lines.next() != Some(SEALED_TAG) {
            return Err(bad("not a sealed secret (wrong first line)"));
        }
        let mut field = |key: &str| -> Result<String> {
            let line = lines.next().ok_or_else(|| bad("truncated"))?;
            line.strip_prefix(key)
                .and_then(|r| r.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| TrustError::Sealed(format!("expected '{key}=' line")))
        };
        let label = field("label")?;
        let kdf_line = field("kdf")?;
        let salt = hex::decode(field("salt")?).map_err(|_| bad("salt is not hex"))?;
        if field("cipher")? != "xchacha20poly1305" {
            return Err(bad("unknown cipher"));
        }
        let mut nonce = [0u8; 24];
        hex::decode_to_slice(field("nonce")?, &mut nonce)
            .map_err(|_| bad("nonce must be 24 bytes of hex"))?;
        let ciphertext =
            hex::decode(field("ciphertext")?).map_err(|_| bad("ciphertext is not hex"))?;
        let kdf = parse_kdf(&kdf_line)
            .ok_or_else(|| bad("kdf line must be 'argon2id-v19 m=… t=… p=…'"))?;
        if kdf.m_kib < KdfParams::FLOOR.m_kib
            || kdf.t < KdfParams::FLOOR.t
            || kdf.p < 1
            || kdf.m_kib > 4 * 1024 * 1024
        {
            return Err(bad(
                "argon2 parameters are outside the accepted range (m ≥ 19 MiB, t ≥ 2, m ≤ 4 GiB)",
            ));
        }
        if salt.len() < 16 {
            return Err(bad("salt shorter than 16 bytes"));
        }
        Ok(Self {
            label,
            kdf,
            salt,
            nonce,
            ciphertext,
        })
    }

    /// Decrypts with `pass`. A wrong passphrase and a modified file are the
    /// same error: authentication failed.
    pub fn open(&self, pass: &Passphrase) -> Result<Zeroizing<Vec<u8>>> {
        let kek = self.kdf.derive(pass, &self.salt)?;
        let header = header(&self.label, self.kdf, &self.salt, &self.nonce);
        XChaCha20Poly1305::new_from_slice(kek.as_ref())
            .map_err(|_| TrustError::Crypto("key length".into()))?
            .decrypt(
                &XNonce::from(self.nonce),
                Payload {
                    msg: &self.ciphertext,
                    aad: header.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| TrustError::WrongPassphrase)
    }
}

fn parse_kdf(line: &str) -> Option<KdfParams> {
    let mut parts = line.split_whitespace();
    if parts.next()? != "argon2id-v19" {
        return None;
    }
    let mut get = |k: &str| {
        parts
            .next()?
            .strip_prefix(k)?
            .strip_prefix('=')?
            .parse::<u32>()
            .ok()
    };
    Some(KdfParams {
        m_kib: get("m")?,
        t: get("t")?,
        p: get("p")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.to_owned()).unwrap()
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let kdf = KdfParams::FLOOR;
        let text = seal(
            b"0123456789abcdef0123456789abcdef",
            "pub",
            &pass("correct horse"),
            kdf,
        )
        .unwrap();
        let f = SealedFile::parse(&text).unwrap();
        assert_eq!(
            &f.open(&pass("correct horse")).unwrap()[..],
            b"0123456789abcdef0123456789abcdef"
        );
        assert!(matches!(
            f.open(&pass("wrong")),
            Err(TrustError::WrongPassphrase)
        ));
        // Changing the label (public key) breaks authentication.
        let swapped = text.replace("label=pub", "label=other");
        let f = SealedFile::parse(&swapped).unwrap();
        assert!(matches!(
            f.open(&pass("correct horse")),
            Err(TrustError::WrongPassphrase)
        ));
        // Lowering the KDF cost below the floor is refused outright.
        let weak = text.replace("m=19456 t=2", "m=8 t=1");
        assert!(matches!(
            SealedFile::parse(&weak),
            Err(TrustError::Sealed(_))
        ));
        // Raising it changes the derived key: authentication fails.
        let other = text.replace("t=2", "t=3");
        let f = SealedFile::parse(&other).unwrap();
        assert!(f.open(&pass("correct horse")).is_err());
        // Flipping a ciphertext digit fails.
        let i = text.find("ciphertext=").unwrap() + 11;
        let mut bytes = text.into_bytes();
        bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
        let f = SealedFile::parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert!(f.open(&pass("correct horse")).is_err());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        for t in [
            "",
            "tensorguard-sealed-secret-v1\n",
            "hello\nworld",
            "tensorguard-sealed-secret-v1\nlabel=x\nkdf=scrypt\n",
        ] {
            assert!(SealedFile::parse(t).is_err(), "{t:?}");
        }
    }
}
