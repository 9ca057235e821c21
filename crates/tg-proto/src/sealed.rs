//! Updates sealed to an attested aggregator's session key.
//!
//! Design decision: an attested aggregator draws an X25519 session key
//! inside its TEE and binds its public half into the evidence's report data
//! ([`aggregator_report_data`]), which an agent verifies before it sends
//! anything. The agent then seals the very bytes it would have sent — the
//! encoded `ToCoordinator::Trained` frame — to that key: a fresh ephemeral
//! X25519 key per message, HKDF-SHA-256 of the agreement (salted with both
//! public keys) as a ChaCha20-Poly1305 key, and the round and sender as
//! associated data (as are the key's context), so a sealed update cannot be moved to another round or
//! claimed by another agent. Only the holder of the session secret (the
//! enclave) opens it; what a host that relays, stores or logs the frame sees
//! is ciphertext. The opened bytes are then read exactly as an unsealed
//! reply is ([`crate::decode_trained`]), so every check on an update applies
//! unchanged.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tg_types::{AgentId, JobId};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::{ProtoError, RoundRef};

/// Domain of the nonce an aggregator's evidence binds (with its peer id and
/// session key: `tg_attest::report_data(&aggregator_nonce(job), peer id,
/// session key)`).
const NONCE_DOMAIN: &[u8] = b"tensorguard/attested-aggregator/v1";
/// HKDF info of a sealed update's key.
const KEY_INFO: &[u8] = b"tensorguard/sealed-update/v1";

/// An attested aggregator as its offer presents it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatorEvidence {
    /// The X25519 public key updates are sealed to.
    pub session_key: [u8; 32],
    /// TEE evidence (`tg_attest::Evidence` bytes) whose report data binds
    /// the job, the coordinator's peer id and `session_key`.
    pub evidence: Vec<u8>,
}

/// An update sealed to the aggregator's session key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedReply {
    /// Round.
    pub at: RoundRef,
    /// Sender.
    pub agent: AgentId,
    /// The sender's ephemeral X25519 public key for this message.
    pub ephemeral: [u8; 32],
    /// ChaCha20-Poly1305 ciphertext (with its tag) of the encoded
    /// `ToCoordinator::Trained` frame.
    pub ciphertext: Vec<u8>,
}

/// The 32-byte nonce an aggregator's evidence binds for `job` (into
/// `tg_attest::report_data` with the coordinator's peer id and the session
/// key). A job id is never reused, so evidence for one job does not fit
/// another.
pub fn aggregator_nonce(job: JobId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(NONCE_DOMAIN);
    h.update(job.to_string().as_bytes());
    h.finalize().into()
}

fn aad(at: RoundRef, agent: &AgentId) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(KEY_INFO);
    v.extend_from_slice(at.job.to_string().as_bytes());
    v.extend_from_slice(&at.round.to_le_bytes());
    v.extend_from_slice(agent.as_str().as_bytes());
    v
}

fn key(
    shared: &x25519_dalek::SharedSecret,
    ephemeral: &[u8; 32],
    session: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, ProtoError> {
    if !shared.was_contributory() {
        return Err(ProtoError::Malformed(
            "a sealing key is a low-order point".into(),
        ));
    }
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(session);
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
        .expand(KEY_INFO, out.as_mut())
        .map_err(|e| ProtoError::Malformed(format!("HKDF: {e}")))?;
    Ok(out)
}

/// Seals `plaintext` (an encoded training reply) from `agent` for round
/// `at` to `session_key`, with the ephemeral secret `ephemeral` (32 random
/// bytes from the caller's CSPRNG; [`seal_reply`] draws them).
pub fn seal_reply_with(
    session_key: &[u8; 32],
    at: RoundRef,
    agent: &AgentId,
    plaintext: &[u8],
    ephemeral: Zeroizing<[u8; 32]>,
) -> Result<SealedReply, ProtoError> {
    let secret = StaticSecret::from(*ephemeral);
    let public = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(*session_key));
    let k = key(&shared, &public, session_key)?;
    let cipher = ChaCha20Poly1305::new_from_slice(k.as_ref())
        .map_err(|e| ProtoError::Encode(format!("AEAD key: {e}")))?;
    // One key per message (the ephemeral key is fresh): a zero nonce is safe.
    let ciphertext = cipher
        .encrypt(
            &Nonce::from([0u8; 12]),
            Payload {
                msg: plaintext,
                aad: &aad(at, agent),
            },
        )
        .map_err(|_| ProtoError::Encode("AEAD encryption failed".into()))?;
    Ok(SealedReply {
        at,
        agent: agent.clone(),
        ephemeral: public,
        ciphertext,
    })
}

/// [`seal_reply_with`] with an ephemeral key from the OS.
pub fn seal_reply(
    session_key: &[u8; 32],
    at: RoundRef,
    agent: &AgentId,
    plaintext: &[u8],
) -> Result<SealedReply, ProtoError> {
    let mut e = Zeroizing::new([0u8; 32]);
    getrandom::fill(e.as_mut())
        .map_err(|err| ProtoError::Encode(format!("no randomness from the OS: {err}")))?;
    seal_reply_with(session_key, at, agent, plaintext, e)
}

/// An aggregator's session secret: drawn inside the TEE, wiped on drop.
pub struct SessionSecret {
    secret: StaticSecret,
    public: [u8; 32],
}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionSecret")
            .field("public", &hex_short(&self.public))
            .finish_non_exhaustive()
    }
}

fn hex_short(b: &[u8]) -> String {
    b.iter().take(6).map(|x| format!("{x:02x}")).collect()
}

impl SessionSecret {
    /// A fresh session key from the OS.
    pub fn generate() -> Result<Self, ProtoError> {
        let mut b = Zeroizing::new([0u8; 32]);
        getrandom::fill(b.as_mut())
            .map_err(|err| ProtoError::Encode(format!("no randomness from the OS: {err}")))?;
        Ok(Self::from_bytes(b))
    }

    /// From 32 secret bytes (tests).
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        let secret = StaticSecret::from(*bytes);
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The public half, bound into the evidence.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Opens `sealed` (untrusted): the plaintext frame, or why not. The
    /// plaintext is wiped when dropped.
    pub fn open(&self, sealed: &SealedReply) -> Result<Zeroizing<Vec<u8>>, ProtoError> {
        if sealed.ciphertext.len() > crate::MAX_FRAME_BYTES {
            return Err(ProtoError::FrameTooLarge(sealed.ciphertext.len()));
        }
        let shared = self
            .secret
            .diffie_hellman(&PublicKey::from(sealed.ephemeral));
        let k = key(&shared, &sealed.ephemeral, &self.public)?;
        let cipher = ChaCha20Poly1305::new_from_slice(k.as_ref())
            .map_err(|e| ProtoError::Malformed(format!("AEAD key: {e}")))?;
        cipher
            .decrypt(
                &Nonce::from([0u8; 12]),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad(sealed.at, &sealed.agent),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                ProtoError::Malformed(
                    "the sealed update does not open with this aggregator's session key for this round and sender"
                        .into(),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(round: u32) -> RoundRef {
        RoundRef {
            job: JobId::from_bytes([3; 16]),
            round,
        }
    }

    fn session() -> SessionSecret {
        SessionSecret::from_bytes(Zeroizing::new([0x11; 32]))
    }

    #[test]
    fn known_answer() {
        let s = session();
        let agent = AgentId::numbered(1);
        let sealed = seal_reply_with(
            &s.public(),
            at(2),
            &agent,
            b"update",
            Zeroizing::new([0x22; 32]),
        )
        .unwrap();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        // Computed independently with Python's `cryptography` 48
        // (X25519PrivateKey, HKDF(SHA256, salt = ephemeral ‖ session public
        // keys), ChaCha20Poly1305 with a zero nonce and the same associated
        // data), not by this code.
        assert_eq!(
            hex(&sealed.ciphertext),
            "0b129b407b6c806c6eaa5301f93aefe69a23f3092b25"
        );
        let again = seal_reply_with(
            &s.public(),
            at(2),
            &agent,
            b"update",
            Zeroizing::new([0x22; 32]),
        )
        .unwrap();
        assert_eq!(sealed, again, "deterministic for a fixed ephemeral key");
        assert_eq!(
            hex(&sealed.ephemeral),
            hex(&PublicKey::from(&StaticSecret::from([0x22; 32])).to_bytes())
        );
        assert_eq!(&s.open(&sealed).unwrap()[..], b"update");
    }

    #[test]
    fn only_the_session_key_for_this_round_and_sender_opens_it() {
        let s = session();
        let agent = AgentId::numbered(1);
        let sealed = seal_reply(&s.public(), at(2), &agent, b"the update").unwrap();
        assert_eq!(&s.open(&sealed).unwrap()[..], b"the update");
        // Another session key (a host that swapped the key in the offer).
        let other = SessionSecret::from_bytes(Zeroizing::new([0x33; 32]));
        assert!(other.open(&sealed).is_err());
        // Moved to another round, or claimed by another agent.
        let mut moved = sealed.clone();
        moved.at = at(3);
        assert!(s.open(&moved).is_err());
        let mut claimed = sealed.clone();
        claimed.agent = AgentId::numbered(2);
        assert!(s.open(&claimed).is_err());
        // A flipped bit, a truncation.
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(s.open(&flipped).is_err());
        let mut cut = sealed.clone();
        cut.ciphertext.truncate(4);
        assert!(s.open(&cut).is_err());
        // A low-order ephemeral key (all-zero agreement) is refused.
        let mut low = sealed;
        low.ephemeral = [0; 32];
        assert!(s.open(&low).is_err());
        // Sealing to a low-order session key is refused too.
        assert!(seal_reply(&[0; 32], at(2), &agent, b"x").is_err());
    }

    #[test]
    fn the_nonce_is_the_job_s() {
        assert_ne!(
            aggregator_nonce(JobId::from_bytes([1; 16])),
            aggregator_nonce(JobId::from_bytes([2; 16]))
        );
    }

    proptest! {
        #[test]
        fn opening_arbitrary_bytes_never_panics(
            eph in any::<[u8; 32]>(),
            ct in proptest::collection::vec(any::<u8>(), 0..256),
            round in any::<u32>(),
        ) {
            let s = session();
            let sealed = SealedReply { at: at(round), agent: AgentId::numbered(0), ephemeral: eph, ciphertext: ct };
            prop_assert!(s.open(&sealed).is_err());
        }
    }
}
