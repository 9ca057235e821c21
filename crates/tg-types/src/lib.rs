//! Shared vocabulary of TensorGuard: identifiers, job specifications, round
//! records and model parameters as named tensors.
//!
//! Design decision: this crate does no I/O and has no async runtime, so every
//! other crate (including the pure privacy/secagg/strategy crates) can depend on
//! it without pulling in a network stack. Parsing happens here, once, at the
//! boundary: a [`spec::DatasetSpec`] or [`spec::PartitionSpec`] that exists is
//! valid, so no code downstream re-checks strings.

pub mod ids;
pub mod job_rules;
pub mod params;
pub mod privacy;
pub mod record;
pub mod reputation;
pub mod robust;
pub mod spec;
pub mod tasks;
pub mod view;

pub use ids::{AgentId, JobId};
pub use params::{NamedTensor, Parameters, ParamsError, Stored};
