//! One interface for everything that signs on the node's behalf.

use crate::{IdentityKey, Result};

/// An Ed25519 signer whose secret may live in memory or in an HSM.
pub trait NodeSigner: Send + Sync {
    /// The Ed25519 public key.
    fn public_key(&self) -> [u8; 32];
    /// Signs `msg` (pure Ed25519, RFC 8032).
    fn sign_bytes(&self, msg: &[u8]) -> Result<[u8; 64]>;
}

impl NodeSigner for IdentityKey {
    fn public_key(&self) -> [u8; 32] {
        self.public().to_bytes()
    }

    fn sign_bytes(&self, msg: &[u8]) -> Result<[u8; 64]> {
        Ok(self.sign(msg).to_bytes())
    }
}
