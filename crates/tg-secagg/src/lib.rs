//! Secure aggregation: the coordinator learns only the sum.
//!
//! Design decision: SecAgg+ (Bell et al. 2020) — pairwise masks over Z_2^B
//! between neighbours in a sparse Harary graph, Shamir recovery of dropped
//! clients — as pure state machines driven by messages, with no runtime or
//! network, so the protocol is tested exhaustively in process and the network
//! layer only moves bytes.

pub mod client;
pub mod crypto;
pub mod encode;
pub mod graph;
pub mod local;
pub mod messages;
pub mod packing;
pub mod round;
pub mod server;
pub mod shamir;

pub use client::Client;
pub use graph::GraphParams;
pub use round::RoundConfig;
pub use server::{AggregateSum, Server};

/// Errors from secure aggregation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecAggError {
    /// Protocol parameters are unusable.
    #[error("secure aggregation parameters: {0}")]
    Params(String),
    /// A cryptographic operation failed (bad key, failed authentication).
    #[error("secure aggregation crypto: {0}")]
    Crypto(String),
    /// A message was refused (bad signature, wrong stage, malformed body).
    #[error("message rejected: {0}")]
    Rejected(String),
    /// The protocol cannot continue (too few participants, inconsistency).
    #[error("secure aggregation aborted: {0}")]
    Protocol(String),
    /// A secret could not be reconstructed from its shares.
    #[error("secret reconstruction failed: {0}")]
    Reconstruction(String),
}
