//! What every party of one secure-aggregation round agrees on up front, and
//! the floors below which an honest client will not take part.
//!
//! Design decision: the configuration is hashed into one digest that enters
//! every key derivation and every signature (`Context::config`). A server
//! that gives two clients two configurations (another participant list,
//! threshold, bit width, noise or encoding) makes them derive different keys
//! and sign different bytes, so the first signature one client checks from
//! the other fails. The client's floors are its own (the data owner's), never
//! taken from the server's offer.

use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::crypto::{Context, Prg};
use crate::graph::{GraphParams, Threat};
use crate::{Refusal, SecAggError};

/// The survivor floor's default fraction of the round's participants.
///
/// A floor that scales with n (not with t) keeps a server from unmasking the
/// sum of a handful of survivors. It does not stop differencing sums across
/// rounds; distributed DP noise does (docs/THREAT_MODEL.md).
pub const DEFAULT_SURVIVOR_FRACTION: f64 = 0.5;

/// Where `identity` sits in round `round` of `job`: participants are listed
/// in increasing order of this key, so a coordinator cannot simply list the
/// identities it controls next to a victim, and each round reshuffles the
/// ring. It does not make seating random against a coordinator: the job id
/// and round number are its choice, and so is the sample, so it can search
/// offline for a seating it likes (docs/THREAT_MODEL.md, Open).
pub fn position_key(job: &[u8; 16], round: u32, identity: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"tensorguard-secagg-position-v1");
    h.update(job);
    h.update(round.to_le_bytes());
    h.update(identity);
    h.finalize().into()
}

/// Refuses (E112) identities that are not in strictly increasing
/// [`position_key`] order (a repeated identity is refused too).
pub fn check_canonical_order(
    job: &[u8; 16],
    round: u32,
    identities: &[[u8; 32]],
) -> Result<(), SecAggError> {
    let keys: Vec<[u8; 32]> = identities
        .iter()
        .map(|id| position_key(job, round, id))
        .collect();
    if let Some(i) = keys.windows(2).position(|w| w[0] >= w[1]) {
        return Err(SecAggError::refused(
            Refusal::NonCanonicalOrder,
            format!("participants {i} and {} are out of order or repeat", i + 1),
        ));
    }
    Ok(())
}

/// The public parameters of a round: who takes part (by identity), the mask
/// graph and threshold, the vector length and the bit width B.
#[derive(Clone, Debug)]
pub struct RoundConfig {
    /// Job, round and this configuration's digest, bound into every key and
    /// signature.
    pub ctx: Context,
    /// Mask graph and Shamir threshold.
    pub graph: GraphParams,
    /// Lanes per input vector.
    pub dim: usize,
    /// Bits per lane: arithmetic is mod 2^B.
    pub bits: u32,
    /// Ed25519 identity of each participant, by round index.
    pub identities: Vec<VerifyingKey>,
    /// Fewest survivors for which honest clients unmask: the threshold, a
    /// fraction of n ([`DEFAULT_SURVIVOR_FRACTION`]), and more when
    /// distributed DP noise must come from that many.
    pub min_survivors: usize,
    /// Mask generator every party uses.
    pub prg: Prg,
    /// The server the thresholds are chosen against.
    pub threat: Threat,
    /// Assumed fraction of participants colluding with the server.
    pub corrupt: f64,
    /// Assumed fraction of participants dropping out.
    pub dropout: f64,
    /// The survivor floor as a fraction of n.
    pub survivor_fraction: f64,
    /// Digest of whatever else the caller's round depends on (encoding,
    /// noise, clipping, sparsification), bound in with the rest.
    pub binding: [u8; 32],
    /// An explicit survivor minimum (e.g. the DP noise's), if larger.
    explicit_min: usize,
}

impl RoundConfig {
    /// A round over `identities` (index = position), sized for the assumed
    /// corrupt and dropout fractions against a malicious server.
    pub fn new(
        ctx: Context,
        identities: Vec<VerifyingKey>,
        dim: usize,
        bits: u32,
        corrupt: f64,
        dropout: f64,
    ) -> Result<Arc<Self>, SecAggError> {
        if !(1..=32).contains(&bits) {
            return Err(SecAggError::Params(format!(
                "bit width B = {bits} must be in 1..=32"
            )));
        }
        if dim == 0 {
            return Err(SecAggError::Params(
                "vectors must have at least one lane".into(),
            ));
        }
        let threat = Threat::Malicious;
        let graph = GraphParams::find(identities.len(), corrupt, dropout, threat)?;
        let mut cfg = Self {
            ctx: Context::new(ctx.job, ctx.round),
            graph,
            dim,
            bits,
            identities,
            min_survivors: 0,
            prg: Prg::default(),
            threat,
            corrupt,
            dropout,
            survivor_fraction: DEFAULT_SURVIVOR_FRACTION,
            binding: [0; 32],
            explicit_min: 0,
        };
        cfg.rebind();
        Ok(Arc::new(cfg))
    }

    /// Recomputes what derives from the fields: the survivor floor and the digest.
    fn rebind(&mut self) {
        let n = self.n();
        let by_fraction = (self.survivor_fraction * n as f64 - 1e-9).ceil().max(0.0) as usize;
        self.min_survivors = self.graph.threshold.max(by_fraction).max(self.explicit_min);
        self.ctx.config = self.digest();
    }

    fn edit(self: Arc<Self>, f: impl FnOnce(&mut Self)) -> Arc<Self> {
        let mut cfg = (*self).clone();
        f(&mut cfg);
        cfg.rebind();
        Arc::new(cfg)
    }

    /// The same round with another mask generator.
    pub fn with_prg(self: Arc<Self>, prg: Prg) -> Arc<Self> {
        self.edit(|c| c.prg = prg)
    }

    /// The same round, refusing to unmask with fewer than `min` survivors.
    pub fn with_min_survivors(self: Arc<Self>, min: usize) -> Arc<Self> {
        self.edit(|c| c.explicit_min = min)
    }

    /// The same round with the survivor floor at `fraction` of n.
    pub fn with_survivor_fraction(
        self: Arc<Self>,
        fraction: f64,
    ) -> Result<Arc<Self>, SecAggError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(SecAggError::Params(format!(
                "survivor fraction {fraction} must be in [0, 1]"
            )));
        }
        Ok(self.edit(|c| c.survivor_fraction = fraction))
    }

    /// The same round with (k, t) chosen against another server.
    pub fn with_threat(self: Arc<Self>, threat: Threat) -> Result<Arc<Self>, SecAggError> {
        let graph = GraphParams::find(self.n(), self.corrupt, self.dropout, threat)?;
        Ok(self.edit(|c| {
            c.threat = threat;
            c.graph = graph;
        }))
    }

    /// The same round, bound to the digest of the caller's other parameters.
    pub fn with_binding(self: Arc<Self>, binding: [u8; 32]) -> Arc<Self> {
        self.edit(|c| c.binding = binding)
    }

    /// SHA-256 of everything every party must agree on.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"tensorguard-secagg-config-v2");
        h.update(self.ctx.job);
        h.update(self.ctx.round.to_le_bytes());
        for v in [
            self.n(),
            self.graph.degree,
            self.graph.threshold,
            self.dim,
            self.min_survivors,
        ] {
            h.update((v as u64).to_le_bytes());
        }
        h.update(self.bits.to_le_bytes());
        for id in &self.identities {
            h.update(id.as_bytes());
        }
        h.update([self.prg as u8, self.threat as u8]);
        for f in [self.corrupt, self.dropout, self.survivor_fraction] {
            h.update(f.to_bits().to_le_bytes());
        }
        h.update(self.binding);
        h.finalize().into()
    }

    /// How many colluding participants the thresholds are sized for:
    /// the assumed fraction of n, counted as the parameter finder counts it.
    pub fn colluders_sized_for(&self) -> usize {
        ((self.corrupt + 1e-14) * self.n() as f64).floor() as usize
    }

    /// Number of participants.
    pub fn n(&self) -> usize {
        self.identities.len()
    }

    /// The identity of participant `i`, if it exists.
    pub fn identity(&self, i: u32) -> Result<&VerifyingKey, SecAggError> {
        self.identities
            .get(i as usize)
            .ok_or_else(|| SecAggError::Rejected(format!("no participant {i} in this round")))
    }

    /// Whether `a` and `b` share masks.
    pub fn are_neighbours(&self, a: u32, b: u32) -> bool {
        a != b
            && (a as usize) < self.n()
            && (b as usize) < self.n()
            && self.graph.neighbours(a as usize).contains(&(b as usize))
    }

    /// The Shamir evaluation point of holder `i`.
    pub fn point(i: u32) -> u64 {
        u64::from(i) + 1
    }

    /// Refuses (E110) a round below the client's `floors`.
    pub fn check_floors(&self, floors: &Floors) -> Result<(), SecAggError> {
        let below = |what: String| Err(SecAggError::refused(Refusal::BelowFloor, what));
        if self.threat != Threat::Malicious && !floors.allow_semi_honest {
            return below(format!(
                "the round is {}, and this agent takes part only against a malicious server",
                self.threat.label()
            ));
        }
        if self.n() < floors.min_participants {
            return below(format!(
                "{} participants offered, this agent's floor is {}",
                self.n(),
                floors.min_participants
            ));
        }
        let own_floor = (floors.min_survivor_fraction * self.n() as f64 - 1e-9)
            .ceil()
            .max(0.0) as usize;
        if self.min_survivors < own_floor {
            return below(format!(
                "survivor floor {} offered, this agent's floor is {own_floor} ({} of {})",
                self.min_survivors,
                floors.min_survivor_fraction,
                self.n()
            ));
        }
        if self.corrupt < floors.assumed_corrupt {
            return below(format!(
                "the round assumes {} of participants corrupt, this agent assumes {}",
                self.corrupt, floors.assumed_corrupt
            ));
        }
        let sized_for = self.colluders_sized_for();
        if let Some(c) = floors.max_colluders
            && sized_for < c
        {
            return below(format!(
                "the round is sized for {sized_for} colluding participants of {}, this agent assumes up to {c} (max_colluders)",
                self.n()
            ));
        }
        // With a bound on the colluders, thresholds must hold however the
        // server seats them (it picks the sample and the job id, so seating
        // is not random against it): even with all of them among one
        // client's neighbours, they hold fewer than t shares, and two
        // disjoint groups of t cannot form (2t > k + c).
        if let Some(c) = floors.max_colluders {
            let (k, t) = (self.graph.degree, self.graph.threshold);
            let near = c.min(k);
            let split_safe = self.threat != Threat::Malicious || 2 * t > k + near;
            if t <= near || !split_safe {
                return below(format!(
                    "threshold {t} of {k} neighbours does not hold if the server seats {near} colluders around one client (max_colluders = {c})"
                ));
            }
        }
        // Any sum the server can unmask holds at least min_survivors
        // inputs; two of them must be honest, or the colluders' own inputs
        // subtract away to leave one alone.
        let colluders = sized_for.max(floors.max_colluders.unwrap_or(0));
        if self.min_survivors < colluders + 2 {
            return below(format!(
                "survivor floor {} leaves fewer than two honest inputs beside {colluders} colluders; this agent needs at least {}",
                self.min_survivors,
                colluders + 2
            ));
        }
        // The threshold is recomputed here from the round's own n and
        // assumptions, never taken on trust.
        let want = GraphParams::find(self.n(), self.corrupt, self.dropout, self.threat)?;
        if self.graph != want {
            return below(format!(
                "graph (k = {}, t = {}) differs from the one the parameters give (k = {}, t = {})",
                self.graph.degree, self.graph.threshold, want.degree, want.threshold
            ));
        }
        if self.graph.threshold < floors.min_threshold {
            return below(format!(
                "threshold {} offered, this agent's floor is {}",
                self.graph.threshold, floors.min_threshold
            ));
        }
        Ok(())
    }
}

/// The corruption a default agent assumes: rounds sized for less are refused.
pub const DEFAULT_ASSUMED_CORRUPT: f64 = 0.05;

/// The least a client accepts, set by the data owner (agent config), never
/// by the server's offer.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Floors {
    /// Fewest participants in a round (the sum of two is the other's input).
    pub min_participants: usize,
    /// Lowest Shamir threshold.
    pub min_threshold: usize,
    /// The round's survivor floor must be at least this fraction of n.
    pub min_survivor_fraction: f64,
    /// The round must assume at least this fraction of participants corrupt.
    pub assumed_corrupt: f64,
    /// Whether a round sized against a semi-honest server is acceptable.
    pub allow_semi_honest: bool,
    /// The most participants of any one round that may collude with the
    /// server (identities it holds certificates for, agents it
    /// compromised). The server chooses each round's sample, so it can seat
    /// all of them in one round: the round must be sized for at least this
    /// many corrupt, and its survivor floor must leave two honest inputs
    /// beside them, and its thresholds must hold however the server seats
    /// them. None: `assumed_corrupt` of each round's participants, seated
    /// at random (which a server that picks the sample can steer).
    pub max_colluders: Option<usize>,
}

impl Default for Floors {
    fn default() -> Self {
        Self {
            min_participants: 3,
            min_threshold: 2,
            min_survivor_fraction: DEFAULT_SURVIVOR_FRACTION,
            assumed_corrupt: DEFAULT_ASSUMED_CORRUPT,
            allow_semi_honest: false,
            max_colluders: None,
        }
    }
}

impl Floors {
    /// Checks the owner's own values: fractions in [0, 1] (a NaN would
    /// silently disable a floor), and a colluder bound below the largest
    /// round this system runs.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("min_survivor_fraction", self.min_survivor_fraction),
            ("assumed_corrupt", self.assumed_corrupt),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{name} = {v} must be a fraction in [0, 1]"));
            }
        }
        if self
            .max_colluders
            .is_some_and(|c| c >= tg_types::view::MAX_PER_PARTICIPANT)
        {
            return Err(format!(
                "max_colluders must be below {} participants",
                tg_types::view::MAX_PER_PARTICIPANT
            ));
        }
        Ok(())
    }

    /// The default floors, also accepting a semi-honest round (benchmarks
    /// and tests of that named, lower-security setting).
    pub fn allowing_semi_honest() -> Self {
        Self {
            allow_semi_honest: true,
            ..Self::default()
        }
    }
}
