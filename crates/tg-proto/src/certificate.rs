//! Fleet certificates: a fleet root key, which is not the coordinator's,
//! vouches for each agent's identity key.
//!
//! Design decision: the coordinator lists a round's participants, so without
//! an authority it does not hold it could enrol as many identities of its own
//! as it likes (Sybils) and seat them anywhere. The fleet root is an
//! operator's offline key (or a token); agents pin its public key and refuse
//! any round in which a participant's identity lacks a valid certificate
//! from it. A certificate binds the identity key, a display name and a
//! validity window; its text form (`tgcert1-` + hex) travels in files and
//! join requests.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

const DOMAIN: &[u8] = b"tensorguard-fleet-cert-v1";
const PREFIX: &str = "tgcert1-";
/// Longest certificate text accepted (names are short).
const MAX_TEXT: usize = 2048;

/// A fleet root's signature on one agent identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// The agent's Ed25519 identity (public key).
    pub identity: [u8; 32],
    /// Display name (not an identity).
    pub name: String,
    /// Valid from (Unix seconds).
    pub not_before: u64,
    /// Valid until (Unix seconds).
    pub not_after: u64,
    /// The fleet root's public key.
    pub root: [u8; 32],
    /// Ed25519 signature by the root over the fields above.
    #[serde(with = "tg_secagg::messages::sig64")]
    pub signature: [u8; 64],
}

/// Why a certificate was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Not a certificate (prefix, hex, encoding, size).
    #[error("not a fleet certificate: {0}")]
    Malformed(String),
    /// Issued by another root than the one pinned.
    #[error("issued by another fleet root")]
    WrongRoot,
    /// For another identity than the participant's.
    #[error("issued for another identity")]
    WrongIdentity,
    /// Outside its validity window.
    #[error("not valid at this time (valid {not_before}..{not_after}, now {now})")]
    Expired {
        /// Valid from.
        not_before: u64,
        /// Valid until.
        not_after: u64,
        /// The time checked.
        now: u64,
    },
    /// The signature does not verify.
    #[error("the root's signature does not verify")]
    BadSignature,
}

/// A 32-byte public key from its 64 hex digits (a fleet root, an identity),
/// or None when the text is anything else.
pub fn key_from_hex(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    if t.len() != 64 || !t.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Certificate {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut out = DOMAIN.to_vec();
        out.extend_from_slice(&self.identity);
        out.extend_from_slice(&(self.name.len() as u64).to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.not_before.to_le_bytes());
        out.extend_from_slice(&self.not_after.to_le_bytes());
        out.extend_from_slice(&self.root);
        out
    }

    /// The root vouches for `identity` from `not_before` to `not_after`.
    pub fn issue(
        root: &SigningKey,
        identity: [u8; 32],
        name: &str,
        not_before: u64,
        not_after: u64,
    ) -> Self {
        let mut c = Self {
            identity,
            name: name.chars().filter(|c| !c.is_control()).take(64).collect(),
            not_before,
            not_after,
            root: root.verifying_key().to_bytes(),
            signature: [0; 64],
        };
        c.signature = root.sign(&c.signed_bytes()).to_bytes();
        c
    }

    /// Checks that this certifies `identity` under the pinned `root` at `now`.
    pub fn verify(&self, root: &[u8; 32], identity: &[u8; 32], now: u64) -> Result<(), CertError> {
        if &self.root != root {
            return Err(CertError::WrongRoot);
        }
        if &self.identity != identity {
            return Err(CertError::WrongIdentity);
        }
        if now < self.not_before || now > self.not_after {
            return Err(CertError::Expired {
                not_before: self.not_before,
                not_after: self.not_after,
                now,
            });
        }
        let key = VerifyingKey::from_bytes(root).map_err(|_| CertError::WrongRoot)?;
        key.verify(
            &self.signed_bytes(),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| CertError::BadSignature)
    }

    /// The text form: `tgcert1-` and the hex of the encoding.
    pub fn to_text(&self) -> String {
        let bytes = postcard::to_allocvec(self).unwrap_or_default();
        let mut s = String::with_capacity(PREFIX.len() + 2 * bytes.len());
        s.push_str(PREFIX);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses the text form (surrounding whitespace allowed).
    pub fn from_text(text: &str) -> Result<Self, CertError> {
        let t = text.trim();
        if t.len() > MAX_TEXT {
            return Err(CertError::Malformed(format!(
                "{} characters, at most {MAX_TEXT}",
                t.len()
            )));
        }
        let hex = t
            .strip_prefix(PREFIX)
            .ok_or_else(|| CertError::Malformed(format!("does not start with {PREFIX}")))?;
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CertError::Malformed("not hex".into()));
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
            .collect();
        let (cert, rest) = postcard::take_from_bytes::<Self>(&bytes)
            .map_err(|e| CertError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Malformed("trailing bytes".into()));
        }
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_and_every_way_to_fail() {
        let root = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let id = SigningKey::from_bytes(&[3; 32]).verifying_key().to_bytes();
        let r = root.verifying_key().to_bytes();
        let c = Certificate::issue(&root, id, "robot-7", 100, 200);
        assert_eq!(c.verify(&r, &id, 150), Ok(()));
        let back = Certificate::from_text(&format!(" {}\n", c.to_text())).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            c.verify(&other.verifying_key().to_bytes(), &id, 150),
            Err(CertError::WrongRoot)
        );
        assert_eq!(c.verify(&r, &[9; 32], 150), Err(CertError::WrongIdentity));
        assert!(matches!(
            c.verify(&r, &id, 201),
            Err(CertError::Expired { .. })
        ));
        let mut forged = c.clone();
        forged.not_after = u64::MAX;
        assert_eq!(forged.verify(&r, &id, 150), Err(CertError::BadSignature));
        // A Sybil's certificate from the coordinator's own "root".
        let sybil = Certificate::issue(&other, id, "sybil", 100, 200);
        assert_eq!(sybil.verify(&r, &id, 150), Err(CertError::WrongRoot));
        let mut relabelled = sybil;
        relabelled.root = r;
        assert_eq!(
            relabelled.verify(&r, &id, 150),
            Err(CertError::BadSignature)
        );
        for bad in [
            "",
            "tgcert1-zz",
            "tgcert1-0",
            "tgcert2-00",
            &"a".repeat(5000),
        ] {
            assert!(Certificate::from_text(bad).is_err(), "{bad}");
        }
        let mut trailing = c.to_text();
        trailing.push_str("00");
        assert!(Certificate::from_text(&trailing).is_err());
    }
}
