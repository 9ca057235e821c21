//! How an agent is told to join (its [`JoinConfig`], settled against its
//! owner's policy before it starts) and what it reports while it runs
//! ([`Status`], read by `tensorguard status` through the control socket).

use std::sync::Mutex;

use serde::Serialize;
use tg_net::Multiaddr;

/// How an agent finds and joins a coordinator.
#[derive(Clone, Debug)]
pub struct JoinConfig {
    /// The coordinator's address; `/p2p/<id>` pins its identity.
    pub coordinator: Option<Multiaddr>,
    /// Find coordinators on the local network with mDNS.
    pub discover: bool,
    /// Name shown to the coordinator's operators.
    pub name: String,
    /// One-time enrollment token.
    pub token: Option<String>,
    /// Seed of local shuffling.
    pub seed: u64,
    /// Stop after the first job finishes (otherwise wait for the next offer).
    pub once: bool,
    /// Seed local shuffling with this name instead of the peer id.
    pub seed_name: Option<String>,
    /// How to attest when a job requires a TEE.
    pub attest: crate::tee::AttestConfig,
    /// The data owner's policy (floors, plaintext, budget).
    pub policy: crate::OwnerPolicy,
    /// Where this dataset's privacy ledger is kept across jobs and restarts
    /// (None: in memory, for this process only).
    pub ledger_dir: Option<std::path::PathBuf>,
    /// This agent's fleet certificate, presented when it joins.
    pub certificate: Option<tg_proto::Certificate>,
}

impl JoinConfig {
    /// Settles whose roster the agent believes before it joins: pins its
    /// own certificate's fleet root when the policy names none, checks that
    /// the certificate is for `identity` and valid now, and refuses a
    /// policy that would decline every round (no plaintext, no root).
    pub fn settle_roster(&mut self, identity: &[u8; 32]) -> Result<(), String> {
        if let Some(cert) = &self.certificate {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            cert.verify(&cert.root, identity, now)
                .map_err(|e| format!("this agent's certificate: {e}"))?;
            self.policy.pin_certificate_root(cert)?;
        }
        self.policy.usable()
    }
}

/// What the agent is doing, for `tensorguard status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusSnapshot {
    /// `connecting`, `joined`, `training`, `finished`, `refused`.
    pub state: String,
    /// This agent's peer id.
    pub peer_id: String,
    /// The coordinator's peer id, once known.
    pub coordinator: Option<String>,
    /// The job, once offered.
    pub job: Option<String>,
    /// Last round worked on.
    pub round: u32,
    /// Messages answered.
    pub answered: u64,
    /// Frames refused (bad signature, replay, other coordinator, …).
    pub refused: u64,
    /// Rounds this agent declined (its owner's floors and budget, a
    /// failed training, …).
    pub declined: u64,
    /// The last round declined and why, as the owner sees it.
    pub last_declined: Option<String>,
    /// The attested aggregator this agent seals its updates to, as it
    /// judged it (`TRUSTED aggregator: …` or `UNTRUSTED: …`).
    pub aggregator: Option<String>,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// Local training examples.
    pub examples: usize,
    /// What this agent's attestation says: `not required`, `TEE: snp`, or
    /// `UNTRUSTED: simulated …` under --insecure.
    pub trust: String,
    /// ε this agent's dataset has spent against the coordinator, by its own
    /// ledger (at the owner's budget δ, else 10⁻⁵); `null` before any DP
    /// round or once a round without DP noise ran (see `epsilon_unbounded`).
    pub epsilon: Option<f64>,
    /// Whether a round without DP noise against the coordinator ran (ε = ∞).
    pub epsilon_unbounded: bool,
}

/// Shared, always-current status.
#[derive(Debug, Default)]
pub struct Status(Mutex<StatusSnapshot>);

impl Status {
    /// A copy of the current status.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut StatusSnapshot)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }
}
