//! Identifiers for jobs and agents.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Identifier of a federated training job (a "run"): 16 random bytes, shown as
/// 32 lowercase hex characters.
///
/// The coordinator draws the bytes; this type only carries and parses them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId([u8; 16]);

impl JobId {
    /// Wraps 16 bytes drawn by the caller (from the OS CSPRNG in production).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// Error parsing an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// A job id must be exactly 32 hex characters.
    #[error("job id `{0}` is not 32 hex characters")]
    BadJobId(String),
    /// An agent id must be 1..=128 characters of `[A-Za-z0-9._-]`.
    #[error("agent id `{0}` must be 1 to 128 characters of letters, digits, '.', '_' or '-'")]
    BadAgentId(String),
}

impl FromStr for JobId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out).map_err(|_| IdError::BadJobId(s.to_owned()))?;
        Ok(Self(out))
    }
}

/// Identifier of an agent taking part in a federation.
///
/// In process this is `agent-007`; over the network it is the textual libp2p
/// peer id. Restricted to a conservative alphabet so it is safe in logs, file
/// names and SQL text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentId(String);

impl AgentId {
    /// Parses and validates an agent id.
    pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s))
        } else {
            Err(IdError::BadAgentId(s))
        }
    }

    /// The conventional name of the `index`-th in-process agent.
    pub fn numbered(index: usize) -> Self {
        Self(format!("agent-{index:03}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AgentId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<AgentId> for String {
    fn from(id: AgentId) -> Self {
        id.0
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_id_round_trips_through_text() {
        let id = JobId::from_bytes([0xab; 16]);
        let parsed: JobId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        assert!("xyz".parse::<JobId>().is_err());
    }

    #[test]
    fn agent_ids_are_restricted() {
        assert!(AgentId::new("agent-001").is_ok());
        assert!(AgentId::new("").is_err());
        assert!(AgentId::new("a b").is_err());
        assert!(AgentId::new("x'; drop table").is_err());
        assert_eq!(AgentId::numbered(7).as_str(), "agent-007");
    }
}
