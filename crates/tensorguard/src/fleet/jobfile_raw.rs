//! The job file's TOML schema for the network, deadlines, admission and
//! secure-aggregation tables, with their defaults; `jobfile.rs` validates
//! and resolves them.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecure {
    #[serde(default = "default_bits")]
    pub(super) bits: u32,
    #[serde(default = "default_clip")]
    pub(super) clip: f64,
    #[serde(default = "default_corrupt")]
    pub(super) corrupt: f64,
    #[serde(default = "default_dropout")]
    pub(super) dropout: f64,
    pub(super) sparsity: Option<f64>,
    /// Examples per unit of FedAvg weight.
    #[serde(default = "default_weight_scale")]
    pub(super) weight_scale: f64,
}

pub(super) fn default_bits() -> u32 {
    20
}
pub(super) fn default_clip() -> f64 {
    10.0
}
pub(super) fn default_corrupt() -> f64 {
    0.05
}
pub(super) fn default_dropout() -> f64 {
    0.3
}
pub(super) fn default_weight_scale() -> f64 {
    100.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNetwork {
    #[serde(default = "default_listen")]
    pub(super) listen: Vec<String>,
    #[serde(default)]
    pub(super) mdns: bool,
    #[serde(default)]
    pub(super) relays: Vec<String>,
}

impl Default for RawNetwork {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            mdns: false,
            relays: Vec::new(),
        }
    }
}

pub(super) fn default_listen() -> Vec<String> {
    vec![
        "/ip4/0.0.0.0/tcp/7700".into(),
        "/ip4/0.0.0.0/udp/7700/quic-v1".into(),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDeadlines {
    #[serde(default = "default_join")]
    pub(super) join_secs: f64,
    #[serde(default = "default_train")]
    pub(super) train_secs: f64,
    #[serde(default = "default_stage")]
    pub(super) stage_secs: f64,
}

impl Default for RawDeadlines {
    fn default() -> Self {
        Self {
            join_secs: default_join(),
            train_secs: default_train(),
            stage_secs: default_stage(),
        }
    }
}

pub(super) fn default_join() -> f64 {
    300.0
}
pub(super) fn default_train() -> f64 {
    300.0
}
pub(super) fn default_stage() -> f64 {
    30.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmission {
    #[serde(default)]
    pub(super) allowed_peers: Vec<String>,
    #[serde(default = "yes")]
    pub(super) enrollment: bool,
    /// The fleet root (64 hex digits) whose certificate every member must present.
    #[serde(default)]
    pub(super) fleet_root: Option<String>,
}

pub(super) fn yes() -> bool {
    true
}

impl Default for RawAdmission {
    fn default() -> Self {
        // Without an [admission] table, enrollment tokens admit agents.
        Self {
            allowed_peers: Vec::new(),
            enrollment: true,
            fleet_root: None,
        }
    }
}
