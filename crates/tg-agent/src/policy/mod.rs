//! The data owner's policy: floors and a privacy budget that the agent
//! enforces on every round, whatever the coordinator's offer says.
//!
//! Design decision: everything here is set by the data owner (a policy file
//! on the agent's machine) and persisted in the agent's own data directory,
//! never taken from the coordinator. A round is judged before training:
//! refused if it is a round this agent already trained, if its update would
//! leave unmasked and the owner does not allow that, if it is a secure round
//! whose participants a pinned fleet root does not all certify (with no root
//! pinned, every secure round is refused unless the owner chose to trust the
//! coordinator's roster), if secure aggregation is below the owner's floors, if its ε against the coordinator exceeds the
//! per-round cap, or if it would take the dataset past its total budget. The
//! charge is written durably before any training, so a crash over-counts,
//! never under-counts, and a new job id cannot reset the budget: it is kept
//! per dataset (by the SHA-256 of its contents), across jobs and restarts.
//!
//! ε is the agent's own, computed from what it does: DP-SGD steps (RDP of
//! the subsampled Gaussian), or its Skellam share under secure aggregation
//! counted over the honest survivors the round guarantees: only its own
//! share, unless the owner pins a fleet root and bounds the colluders
//! (`max_colluders`) and every participant masks with every other (the
//! complete graph), and then the survivor floor less those colluders (or
//! the assumed corrupt fraction, if more). No sampling amplification: the
//! coordinator picks the sample. A round that
//! releases anything without DP noise to the coordinator (plaintext without
//! DP-SGD, central DP, a secure sum without noise) has ε = ∞ for this
//! dataset and is refused whenever a budget is set.

use serde::{Deserialize, Serialize};
use tg_privacy::{Delta, SamplingRate, SkellamParams};
use tg_proto::{DeclineReason, TrainRequest};

/// The owner's policy file (TOML; every key optional). The default allows
/// no plaintext round, takes the default secure-aggregation floors, and sets
/// no budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OwnerPolicy {
    /// Whether a round whose update leaves this agent unmasked (no secure
    /// aggregation) may ever run. Default: no.
    pub allow_plaintext: bool,
    /// Whether the coordinator may ask for evaluation metrics (loss,
    /// accuracy, example count) on this agent's data, computed on a model it
    /// chooses — they are released without DP. Default: no.
    pub allow_evaluation: bool,
    /// Secure-aggregation floors: participants, threshold, survivor
    /// fraction, assumed corruption, semi-honest rounds.
    pub secure_aggregation: tg_secagg::Floors,
    /// The most ε one round may spend against the coordinator.
    pub max_round_epsilon: Option<f64>,
    /// The total budget of this dataset, across jobs and restarts.
    pub budget: Option<Budget>,
    /// The fleet root's public key (64 hex digits): every participant of a
    /// secure round must carry a certificate from it, or the round is refused.
    /// Unset, the root of the agent's own certificate (`--certificate`) is
    /// pinned; with neither, secure rounds are refused, since the
    /// coordinator could fill them with identities of its own. The value
    /// [`TRUST_COORDINATOR`] accepts the coordinator's roster instead — a
    /// named, lower-security choice: secure aggregation then protects the
    /// update from other agents, not from the coordinator.
    pub fleet_root: Option<String>,
    /// The most local epochs one round may ask of this machine (default
    /// [`DEFAULT_MAX_LOCAL_EPOCHS`]): the coordinator sets the work, the
    /// owner bounds it.
    pub max_local_epochs: Option<u32>,
    /// The most DP-SGD steps one round may ask (default
    /// [`DEFAULT_MAX_DP_STEPS`]).
    pub max_dp_steps: Option<u32>,
    /// The most bytes one round's update may take on the wire (the
    /// operating envelope). A plaintext update over it is sent top-k
    /// sparsified when the round allows, else the round is declined; a
    /// secure round whose masked vector is over it is declined.
    pub max_update_bytes: Option<u64>,
    /// What one budget covers: everything this agent serves (`agent`, the
    /// default: adding a record or another shard never starts a fresh
    /// budget), or each exact dataset content (`dataset`).
    pub budget_scope: BudgetScope,
}

/// What one privacy budget covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum BudgetScope {
    /// Every dataset this agent (data directory) serves shares one ledger.
    #[default]
    Agent,
    /// Each exact dataset content has its own ledger.
    Dataset,
}

/// The `fleet_root` value that accepts the coordinator's roster unchecked.
pub const TRUST_COORDINATOR: &str = "trust-coordinator";

/// Whom the agent trusts to say who takes part in a secure round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Roster {
    /// Every participant must carry a certificate from this fleet root.
    Pinned([u8; 32]),
    /// The owner chose to accept the coordinator's roster
    /// (`fleet_root = "trust-coordinator"`).
    TrustCoordinator,
    /// No root is pinned and no choice was made: secure rounds are refused.
    Unpinned,
}

/// The ledger key of an agent-scoped budget.
pub const AGENT_LEDGER: &str = "agent";

impl OwnerPolicy {
    /// The key of the ledger that charges rounds on `data`.
    pub fn ledger_key(&self, data: &tg_model::Dataset) -> String {
        match self.budget_scope {
            BudgetScope::Agent => AGENT_LEDGER.to_owned(),
            BudgetScope::Dataset => fingerprint(data),
        }
    }

    /// The ledger key of data the agent cannot read itself (a Python
    /// learner's), named by its owner: agent-wide by default, else a
    /// digest of `name`, so any name makes a safe file name.
    pub fn ledger_key_named(&self, name: &str) -> String {
        use sha2::{Digest, Sha256};
        match self.budget_scope {
            BudgetScope::Agent => AGENT_LEDGER.to_owned(),
            BudgetScope::Dataset => Sha256::new()
                .chain_update(b"tensorguard-named-dataset\0")
                .chain_update(name.as_bytes())
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }
}

/// Local epochs a round may ask of an agent whose owner set no limit.
pub const DEFAULT_MAX_LOCAL_EPOCHS: u32 = 100;
/// DP-SGD steps a round may ask of an agent whose owner set no limit.
pub const DEFAULT_MAX_DP_STEPS: u32 = 100_000;

impl OwnerPolicy {
    /// A policy that lets every round run (in-process simulations, where
    /// every party is the same user).
    pub fn permissive() -> Self {
        Self {
            allow_plaintext: true,
            allow_evaluation: true,
            secure_aggregation: tg_secagg::Floors::allowing_semi_honest(),
            fleet_root: Some(TRUST_COORDINATOR.to_owned()),
            max_local_epochs: Some(u32::MAX),
            max_dp_steps: Some(u32::MAX),
            ..Self::default()
        }
    }

    /// Whom this policy trusts for a secure round's roster.
    pub fn roster(&self) -> Result<Roster, String> {
        match self.fleet_root.as_deref().map(str::trim) {
            None => Ok(Roster::Unpinned),
            Some(TRUST_COORDINATOR) => Ok(Roster::TrustCoordinator),
            Some(h) => tg_proto::key_from_hex(h)
                .map(Roster::Pinned)
                .ok_or_else(|| {
                    format!(
                        "fleet_root = \"{h}\" is neither 64 hex digits nor \"{TRUST_COORDINATOR}\""
                    )
                }),
        }
    }

    /// Pins the root of the agent's own certificate when the policy names
    /// none (the certificate came from the fleet's operator, not from the
    /// coordinator). A policy that pins another root, or that trusts the
    /// coordinator, conflicts with the certificate: refused, so that the
    /// owner's intent is never silently changed.
    pub fn pin_certificate_root(&mut self, cert: &tg_proto::Certificate) -> Result<(), String> {
        let theirs = hex32(&cert.root);
        match self.roster()? {
            Roster::Unpinned => {
                self.fleet_root = Some(theirs);
                Ok(())
            }
            Roster::Pinned(root) if root == cert.root => Ok(()),
            Roster::Pinned(root) => Err(format!(
                "the certificate was issued by fleet root {theirs}, but the policy pins {}",
                hex32(&root)
            )),
            Roster::TrustCoordinator => Err(format!(
                "the policy says fleet_root = \"{TRUST_COORDINATOR}\", yet a certificate from fleet root {theirs} was given"
            )),
        }
    }

    /// Whether this policy can take part in any round at all: a plaintext
    /// round if it allows those, a secure one if it knows whose roster to
    /// believe.
    pub fn usable(&self) -> Result<(), String> {
        if self.allow_plaintext || self.roster()? != Roster::Unpinned {
            return Ok(());
        }
        Err(format!(
            "the policy allows no plaintext round and pins no fleet root, so the agent would refuse every round: pass --certificate (from the fleet's operator), set fleet_root = \"<hex>\" in the policy, or fleet_root = \"{TRUST_COORDINATOR}\" to accept the coordinator's roster"
        ))
    }

    /// Parses a policy file's text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let p: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(b) = &p.budget {
            if !(b.epsilon > 0.0 && b.epsilon.is_finite()) {
                return Err(format!("budget.epsilon = {} must be positive", b.epsilon));
            }
            if !(b.delta > 0.0 && b.delta < 1.0) {
                return Err(format!("budget.delta = {} must be in (0, 1)", b.delta));
            }
        }
        if p.max_round_epsilon.is_some_and(|e| !(e > 0.0)) {
            return Err("max_round_epsilon must be positive".into());
        }
        p.secure_aggregation
            .validate()
            .map_err(|e| format!("[secure_aggregation] {e}"))?;
        if p.max_local_epochs == Some(0) || p.max_dp_steps == Some(0) {
            return Err("max_local_epochs and max_dp_steps must be at least 1".into());
        }
        if p.max_update_bytes.is_some_and(|b| b < 1024) {
            return Err("max_update_bytes must be at least 1024 (an update's framing alone takes hundreds of bytes)".into());
        }
        p.roster()?;
        Ok(p)
    }
}

/// A total (ε, δ) budget for one dataset.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// ε never to be exceeded.
    pub epsilon: f64,
    /// δ of that ε.
    pub delta: f64,
}

/// RDP orders every mechanism is composed at.
fn orders() -> Vec<u64> {
    tg_privacy::skellam::skellam_orders()
}

mod ledger;
pub use ledger::OwnerLedger;

/// The RDP curve of one round against the coordinator, or None when the
/// round releases something without DP noise to it.
fn round_rdp(
    req: &TrainRequest,
    params: usize,
    floors: &tg_secagg::Floors,
    rooted: bool,
) -> Result<Option<Vec<f64>>, String> {
    let mut rdp = vec![0.0; orders().len()];
    let mut noised = false;
    if let Some(dp) = &req.config.dp_sgd {
        for (r, a) in rdp.iter_mut().zip(orders()) {
            *r += dp.steps_per_round as f64
                * tg_privacy::subsampled_gaussian_rdp(
                    dp.sampling_rate,
                    dp.noise_multiplier,
                    a as f64,
                );
        }
        noised = true;
    }
    if let Some(secure) = &req.secure
        && let Some(v) = secure.local_noise_variance
    {
        let (cfg, enc) = secure
            .build(req.at, secure.dim_for(params))
            .map_err(|e| e.to_string())?;
        // The credit below assumes the owner's floors hold (the agent's
        // precheck enforces them first; a direct caller gets them here).
        cfg.check_floors(floors).map_err(|e| e.to_string())?;
        // Without a pinned fleet root every other participant may be the
        // coordinator's own, and without an absolute bound on colluders the
        // coordinator, which picks the sample, may fill a round with all of
        // its own: only this agent's noise is then sure to be there.
        // Only on the complete graph does every unmasked sum hold the whole
        // survivor floor: on a sparse one, differing survivor sets shown to
        // different regions of the ring can leave fewer inputs in the sum
        // than any client's own view says.
        let complete = cfg.graph.degree + 1 == cfg.n();
        let honest = match (rooted && complete, floors.max_colluders) {
            (true, Some(most)) => {
                let by_fraction =
                    (floors.assumed_corrupt.max(cfg.corrupt) * cfg.n() as f64).ceil() as usize;
                cfg.min_survivors
                    .saturating_sub(by_fraction.max(most))
                    .max(1)
            }
            _ => 1,
        };
        let mu = honest as f64 * v / (enc.scale * enc.scale);
        // Replacing one record can flip the clipped vector (Δ₂ = 2C), and
        // both vectors are rounded: 2Cs + 2√d in the integer domain.
        let p = SkellamParams::for_dimension(2.0 * enc.clip, enc.padded as u64, mu, enc.scale)
            .and_then(|p| p.with_rounding_replace_one(enc.padded as u64))
            .map_err(|e| e.to_string())?;
        let one = SamplingRate::new(1.0).map_err(|e| e.to_string())?;
        for (r, a) in rdp.iter_mut().zip(orders()) {
            *r += p.subsampled_rdp(one, a);
        }
        noised = true;
    }
    // Noise the coordinator adds itself (central DP) does not protect
    // against the coordinator; neither does a noiseless secure sum.
    Ok(noised.then_some(rdp))
}

/// Lower-case hex of a 32-byte key.
fn hex32(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// A refusal: the code sent to the coordinator, the detail kept in the log.
pub type Refusal = (DeclineReason, String);

/// The ledger as it will stand once a judged round is charged.
#[derive(Debug)]
pub struct Pending(OwnerLedger);

impl OwnerLedger {
    /// Charges a judged round durably (before training).
    pub fn commit(&mut self, pending: Pending) -> Result<(), Refusal> {
        pending.0.save().map_err(|e| {
            (
                DeclineReason::OwnerFloor,
                format!("cannot record the charge durably: {e}"),
            )
        })?;
        *self = pending.0;
        Ok(())
    }
}

/// Judges one round before training: the ledger it would leave, or why it
/// may not run. Nothing is charged until [`OwnerLedger::commit`].
pub fn judge_round(
    policy: &OwnerPolicy,
    ledger: &OwnerLedger,
    req: &TrainRequest,
    params: usize,
) -> Result<Pending, Refusal> {
    let mut ledger = ledger.clone();
    let key = format!("{}/{}", req.at.job, req.at.round);
    if ledger.trained.contains(&key) {
        return Err((
            DeclineReason::RoundReplayed,
            format!(
                "round {} of job {} was already trained here: a round is never trained twice (its noise would average away)",
                req.at.round, req.at.job
            ),
        ));
    }
    let roster = policy
        .roster()
        .map_err(|e| (DeclineReason::OwnerFloor, e))?;
    if let Some(secure) = &req.secure {
        match roster {
            Roster::Pinned(root) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                secure
                    .check_certificates(&root, now)
                    .map_err(|e| (DeclineReason::UncertifiedParticipant, e))?;
            }
            Roster::TrustCoordinator => {}
            Roster::Unpinned => {
                return Err((
                    DeclineReason::OwnerFloor,
                    format!(
                        "this agent pins no fleet root, so any participant of this secure round may be the coordinator's own identity (a Sybil) — pass --certificate from the fleet's operator, or set fleet_root in the policy (\"{TRUST_COORDINATOR}\" accepts the coordinator's roster)"
                    ),
                ));
            }
        }
    }
    // The work a round asks of this machine, within the owner's limits (a
    // coordinator could otherwise ask for a billion epochs).
    let max_epochs = policy.max_local_epochs.unwrap_or(DEFAULT_MAX_LOCAL_EPOCHS);
    if req.config.local_epochs > max_epochs {
        return Err((
            DeclineReason::OwnerFloor,
            format!(
                "the round asks for {} local epochs; this agent's owner allows at most {max_epochs} (max_local_epochs)",
                req.config.local_epochs
            ),
        ));
    }
    let max_steps = policy.max_dp_steps.unwrap_or(DEFAULT_MAX_DP_STEPS);
    // DP-SGD's work is steps × (rate × examples): in epochs, steps × rate.
    if let Some(dp) = &req.config.dp_sgd
        && f64::from(dp.steps_per_round) * dp.sampling_rate.get() > f64::from(max_epochs)
    {
        return Err((
            DeclineReason::OwnerFloor,
            format!(
                "the round asks for {} DP-SGD steps at sampling rate {}, {:.0} epochs of work; this agent's owner allows at most {max_epochs} (max_local_epochs)",
                dp.steps_per_round,
                dp.sampling_rate.get(),
                f64::from(dp.steps_per_round) * dp.sampling_rate.get()
            ),
        ));
    }
    if let Some(dp) = &req.config.dp_sgd
        && dp.steps_per_round > max_steps
    {
        return Err((
            DeclineReason::OwnerFloor,
            format!(
                "the round asks for {} DP-SGD steps; this agent's owner allows at most {max_steps} (max_dp_steps)",
                dp.steps_per_round
            ),
        ));
    }
    if req.secure.is_none() && !policy.allow_plaintext {
        return Err((
            DeclineReason::PlaintextRefused,
            "the round has no secure aggregation and this agent's owner does not allow updates to leave unmasked (allow_plaintext = false)".into(),
        ));
    }
    let floor = |e: String| (DeclineReason::OwnerFloor, e);
    let rooted = matches!(roster, Roster::Pinned(_));
    let rdp = round_rdp(req, params, &policy.secure_aggregation, rooted)
        .map_err(|e| floor(format!("cannot account the round: {e}")))?;
    let delta =
        Delta::new(policy.budget.map_or(1e-5, |b| b.delta)).map_err(|e| floor(e.to_string()))?;
    let o: Vec<f64> = orders().iter().map(|&a| a as f64).collect();
    match &rdp {
        None if policy.budget.is_some() => {
            return Err((
                DeclineReason::PrivacyBudgetExhausted,
                "the round releases an update without DP noise against the coordinator (ε = ∞), and this dataset has a budget".into(),
            ));
        }
        None if policy.max_round_epsilon.is_some() => {
            return Err(floor(
                "the round has no DP noise against the coordinator, and this agent caps ε per round".into(),
            ));
        }
        None => ledger.unbounded = true,
        Some(round) => {
            if let Some(cap) = policy.max_round_epsilon {
                let e = tg_privacy::rdp_to_epsilon(&o, round, delta).0;
                if e > cap {
                    return Err(floor(format!(
                        "one round spends ε = {e:.4} (δ = {}) against the coordinator, above this agent's cap {cap}",
                        delta.get()
                    )));
                }
            }
            let after: Vec<f64> = ledger.rdp.iter().zip(round).map(|(a, b)| a + b).collect();
            if let Some(b) = &policy.budget {
                let eps = tg_privacy::rdp_to_epsilon(&o, &after, delta).0;
                if ledger.unbounded || eps > b.epsilon {
                    return Err((
                        DeclineReason::PrivacyBudgetExhausted,
                        format!(
                            "this round would take this dataset from ε = {:.4} to {eps:.4}, above the owner's budget {} at δ = {}",
                            ledger.epsilon(delta),
                            b.epsilon,
                            b.delta
                        ),
                    ));
                }
            }
            ledger.rdp = after;
        }
    }
    ledger.trained.insert(key);
    Ok(Pending(ledger))
}

/// SHA-256 of a dataset's labels and features: the key of its budget.
pub fn fingerprint(data: &tg_model::Dataset) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((data.len() as u64).to_le_bytes());
    for l in data.labels() {
        h.update(l.to_le_bytes());
    }
    for f in data.features() {
        h.update(f.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
