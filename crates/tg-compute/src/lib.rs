//! The compute network: every agent can also be a volunteer compute node.
//!
//! Design decision: *no coordinator, and trust nobody's single answer*. Nodes
//! find each other through Kademlia provider records (one key per task kind
//! and per model), a submitter stores each task before sending it and assigns
//! it to the best-scoring capable peers, and a result counts only when a
//! quorum of independent workers agree (cosine ≥ 0.999 for embeddings), with
//! BOINC-style adaptive replication for workers with a long valid streak.
//! Workers run at nice 19 under a CPU cap enforced by duty-cycling against
//! getrusage, refuse work above their memory and queue bounds, and keep the
//! submitters' signed receipts in an append-only wallet.

pub mod artifacts;
pub mod cache;
pub mod cap;
mod error;
pub mod node;
pub mod policy;
mod proto;
pub mod store;
pub mod wallet;
pub mod worker;

pub use error::ComputeError;
pub use node::{
    Handle, LATENCY_BOUNDS_MS, NodeConfig, NodeStats, NodeStatus, OVERHEAD_SAMPLES, PeerRow,
    Progress, Stage, start,
};
pub use policy::{Policy, Redundancy, Standing, Standings, Verdict, judge};
pub use proto::{
    ARTIFACT_PART_BYTES, COMPUTE_PROTOCOL, Capability, MAX_MESSAGE_BYTES, Msg, Receipt,
    SignedResult, TaskId, input_digest, task_hex,
};
pub use wallet::{ReceiptRecord, Wallet, WalletExport};
pub use worker::WorkerConfig;
