//! The freshness binding carried in a TEE report's 64 user bytes.
//!
//! Design decision: the report data is
//! `SHA-512("tensorguard-attest-v1" ‖ nonce ‖ peer id ‖ session key)`.
//! The coordinator draws the 32-byte nonce for each offer, so old evidence
//! cannot be replayed; the peer id is the libp2p identity whose key signs
//! every frame of the session, and the session key is that key's raw Ed25519
//! bytes, so evidence cannot be lifted onto another connection. The nonce
//! and the session key have fixed lengths, which makes the concatenation
//! unambiguous even though a peer id's length varies.

use sha2::{Digest, Sha512};

/// Domain-separation prefix of the report data hash.
pub const REPORT_DATA_DOMAIN: &[u8] = b"tensorguard-attest-v1";

/// The 64 bytes an agent asks its TEE to bind into the evidence.
pub fn report_data(nonce: &[u8; 32], peer_id: &[u8], session_key: &[u8; 32]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(REPORT_DATA_DOMAIN);
    h.update(nonce);
    h.update(peer_id);
    h.update(session_key);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer_and_sensitivity() {
        let nonce = [7u8; 32];
        let key = [9u8; 32];
        let a = report_data(&nonce, b"peer", &key);
        // Python: hashlib.sha512(b"tensorguard-attest-v1" + b"\x07"*32 + b"peer" + b"\x09"*32)
        assert_eq!(hex::encode(&a[..8]), "6650d3255e763125");
        assert_ne!(a, report_data(&[8u8; 32], b"peer", &key));
        assert_ne!(a, report_data(&nonce, b"peeR", &key));
        assert_ne!(a, report_data(&nonce, b"peer", &[1u8; 32]));
    }
}
