//! Secure aggregation: the coordinator learns only the sum.
//!
//! Design decision: SecAgg+ (Bell et al. 2020) — pairwise masks over Z_2^B
//! between neighbours in a sparse Harary graph, Shamir recovery of dropped
//! clients — as pure state machines driven by messages, with no runtime or
//! network, so the protocol is tested exhaustively in process and the network
//! layer only moves bytes.
//!
//! The default threat is a **malicious** coordinator (Bell et al. 2020,
//! §4–5): thresholds satisfy `2t > k + c`, a client masks only once it holds
//! shares from at least `t` neighbours, a survivor's self-mask seed is
//! revealed only when its signed commitment to the neighbours it masked with
//! shows the survivor set leaves that mask standing, and
//! the digest of the whole round configuration is bound into every key and
//! signature. When an honest client detects a deviation it refuses with a
//! [`Refusal`] code; `tests/red_team.rs` runs each attack against it.

pub mod client;
pub mod crypto;
pub mod graph;
pub mod local;
pub mod messages;
pub mod packing;
pub mod round;
mod rules;
pub mod server;
pub mod shamir;

pub use client::Client;
pub use graph::{GraphParams, Threat};
pub use round::{Floors, RoundConfig};
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
    /// An honest client detected a deviation (or a configuration below its
    /// floors) and refused to go on: nothing more leaves it this round.
    #[error("error[{}]: {} — {detail} — {}", .code.code(), .code.what(), .code.fix())]
    Refused {
        /// Which check refused.
        code: Refusal,
        /// The offending values.
        detail: String,
    },
}

impl SecAggError {
    /// The refusal code, if an honest party refused.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A refusal with `code` (for callers that enforce a rule of the round
    /// outside the state machines, e.g. the participant order).
    pub fn refused(code: Refusal, detail: impl Into<String>) -> Self {
        Self::Refused {
            code,
            detail: detail.into(),
        }
    }
}

/// Why an honest client refused to continue a round: each is one attack a
/// malicious coordinator could try, with a stable code (docs/ERRORS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// E100: fewer than `t` neighbours' shares reached this client, so it
    /// would have masked with too few neighbours (withheld shares).
    TooFewShares,
    /// E101: fewer than `t` neighbours' keys reached this client.
    TooFewKeys,
    /// E102: the survivor set is unsorted, repeats, names an index outside
    /// the round, or leaves this client out.
    MalformedSurvivors,
    /// E103: fewer survivors than the round's survivor floor.
    SurvivorsBelowFloor,
    /// E104: a neighbour is listed as a survivor but this client never
    /// masked with it (its shares were withheld from this client).
    UnmaskedSurvivor,
    /// E105: too many of the neighbours this client masked with were
    /// declared dropped: fewer than `t` of them survive.
    MaskingNeighboursDropped,
    /// E106: a neighbour signed a different survivor set (split view).
    Equivocation,
    /// E107: a survivor whose self-mask share this client holds has no
    /// signed commitment to the neighbours it masked with: its seed is
    /// revealed only when the commitment shows its mask stays standing.
    MissingCommitment,
    /// E108: fewer than `t` surviving neighbours confirmed the survivor set.
    TooFewConfirmations,
    /// E109: a message's signature does not verify for this round's
    /// configuration (forged, replayed, or an equivocated configuration).
    BadSignature,
    /// E110: the round's configuration is below this client's floors
    /// (participants, threshold, survivor floor, threat model).
    BelowFloor,
    /// E111: the server sent a message that is not this stage's, not for
    /// this client, or twice.
    Malformed,
    /// E112: the participants are not in the round's canonical order (or an
    /// identity repeats): the coordinator tried to choose who neighbours whom.
    NonCanonicalOrder,
}

impl Refusal {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            Self::TooFewShares => "E100",
            Self::TooFewKeys => "E101",
            Self::MalformedSurvivors => "E102",
            Self::SurvivorsBelowFloor => "E103",
            Self::UnmaskedSurvivor => "E104",
            Self::MaskingNeighboursDropped => "E105",
            Self::Equivocation => "E106",
            Self::MissingCommitment => "E107",
            Self::TooFewConfirmations => "E108",
            Self::BadSignature => "E109",
            Self::BelowFloor => "E110",
            Self::Malformed => "E111",
            Self::NonCanonicalOrder => "E112",
        }
    }

    /// What happened.
    pub fn what(self) -> &'static str {
        match self {
            Self::TooFewShares => "too few neighbours' shares reached this client",
            Self::TooFewKeys => "too few neighbours' keys reached this client",
            Self::MalformedSurvivors => "the survivor set is malformed",
            Self::SurvivorsBelowFloor => "too few survivors",
            Self::UnmaskedSurvivor => "a survivor this client never masked with",
            Self::MaskingNeighboursDropped => "too many masking neighbours declared dropped",
            Self::Equivocation => "neighbours were shown different survivor sets",
            Self::MissingCommitment => "a survivor's signed mask commitment is missing",
            Self::TooFewConfirmations => "too few neighbours confirmed the survivor set",
            Self::BadSignature => "a signature does not verify for this round",
            Self::BelowFloor => "the round is below this agent's floors",
            Self::Malformed => "the coordinator sent a malformed protocol message",
            Self::NonCanonicalOrder => "the participants are not in the round's canonical order",
        }
    }

    /// What to do about it.
    pub fn fix(self) -> &'static str {
        match self {
            Self::BelowFloor => {
                "nothing was sent; the operator must offer a round that meets the floors in the agent's config"
            }
            Self::TooFewKeys
            | Self::TooFewShares
            | Self::MaskingNeighboursDropped
            | Self::TooFewConfirmations
            | Self::SurvivorsBelowFloor => {
                "nothing revealing was sent; too many participants dropped out, or the coordinator withheld their messages: if it recurs with few dropouts, treat the coordinator as deviating"
            }
            _ => {
                "the round was refused, nothing revealing was sent; the coordinator deviated from the protocol (or the network corrupted it): keep the agent's log as evidence"
            }
        }
    }
}
