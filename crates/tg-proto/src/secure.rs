//! The public parameters of a secure-aggregation round, as the coordinator
//! offers them and every agent rebuilds and checks them.
//!
//! Design decision: the offer is plain data; [`SecureRound::build`] is the
//! one place where agents and coordinator turn it into the protocol's round
//! configuration and encoding, binding the whole offer into the
//! configuration's digest and checking the participants' seating, so the
//! two sides cannot build different rounds from the same bytes.

use serde::{Deserialize, Serialize};
use tg_types::AgentId;

use crate::RoundRef;

/// The public parameters of a secure-aggregation round, sent with the
/// training request so every participant builds the same round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecureRound {
    /// Participants in round order, with their Ed25519 identity keys.
    pub participants: Vec<(AgentId, [u8; 32])>,
    /// The participants' fleet certificates, in the same order, when every
    /// participant has one (empty otherwise). Agents that pin a fleet root
    /// refuse a round whose participants are not all certified by it.
    pub certificates: Vec<crate::Certificate>,
    /// Bits per lane.
    pub bits: u32,
    /// L2 clipping norm of updates.
    pub clip: f64,
    /// Assumed fraction of clients colluding with the server.
    pub corrupt: f64,
    /// Assumed fraction of clients dropping out.
    pub dropout: f64,
    /// Public seed of the rotation.
    pub rotation_seed: [u8; 32],
    /// FedAvg weighting: each agent sends (w·update, w) with
    /// w = examples / `weight_scale`, so the sum gives the example-weighted
    /// mean. None: every agent weighs 1 (e.g. under DP-SGD, where the number
    /// of examples is private).
    pub weight_scale: Option<f64>,
    /// Shared random-k sparsification: the fraction of coordinates every
    /// agent sends this round (the same coordinates for all, drawn from
    /// `rotation_seed`); None sends them all.
    pub keep_fraction: Option<f64>,
    /// Distributed DP: every agent adds Skellam noise of this variance (in
    /// integer units) to each lane; None adds none.
    pub local_noise_variance: Option<f64>,
    /// The encoding is sized for this many clients (≥ the participants), so
    /// its scale — and the DP accounting — do not change with the sample.
    pub max_clients: Option<u32>,
    /// Honest agents refuse to unmask with fewer survivors than this.
    pub min_survivors: Option<u32>,
    /// Distributed DP: the encoding scale the privacy ledger charged for,
    /// pinned for every round of the job (None: the encoding's own).
    pub scale: Option<f64>,
    /// The mask generator (AES-128-CTR, or ChaCha20 for fleets without AES hardware).
    pub prg: tg_secagg::crypto::Prg,
}

impl SecureRound {
    /// The coordinates sent this round, ascending (all of them without
    /// sparsification). Public: derived from the round's seed.
    pub fn coordinates(&self, params: usize) -> Vec<usize> {
        // Domain-separated from the rotation's stream.
        let mut seed = self.rotation_seed;
        seed[0] ^= 0x5a;
        tg_compress::shared_random_k(params, self.keep_fraction.unwrap_or(1.0), seed)
    }

    /// Lanes per encoded vector for a model of `params` values: the sent
    /// coordinates of the weighted update, and the weight.
    pub fn dim_for(&self, params: usize) -> usize {
        self.coordinates(params).len() + 1
    }

    /// The protocol round and the update encoding every party derives from
    /// these public parameters, for encoded vectors of `dim` values.
    pub fn build(
        &self,
        at: RoundRef,
        dim: usize,
    ) -> Result<
        (
            std::sync::Arc<tg_secagg::RoundConfig>,
            tg_compress::Encoding,
        ),
        tg_secagg::SecAggError,
    > {
        // Every per-participant list of the protocol is capped at decode:
        // a round that could not carry its own survivor set is refused now,
        // before anyone is charged for it.
        if self.participants.len() > tg_types::view::MAX_PER_PARTICIPANT {
            return Err(tg_secagg::SecAggError::Rejected(format!(
                "{} participants, more than the {} a round may have",
                self.participants.len(),
                tg_types::view::MAX_PER_PARTICIPANT
            )));
        }
        let max_clients = self
            .max_clients
            .map_or(self.participants.len(), |m| m as usize);
        if max_clients < self.participants.len() {
            return Err(tg_secagg::SecAggError::Params(format!(
                "{} participants, but the encoding is sized for {max_clients}",
                self.participants.len()
            )));
        }
        let params = |e: tg_compress::EncodeError| tg_secagg::SecAggError::Params(e.to_string());
        let mut encoding = tg_compress::Encoding::new(
            dim,
            self.bits,
            self.clip,
            max_clients,
            self.local_noise_variance.unwrap_or(0.0).sqrt(),
            self.rotation_seed,
        )
        .map_err(params)?;
        if let Some(scale) = self.scale {
            encoding = encoding.with_scale(scale).map_err(params)?;
        }
        // Seats come from the identities, not from the coordinator.
        let keys: Vec<[u8; 32]> = self.participants.iter().map(|(_, k)| *k).collect();
        tg_secagg::round::check_canonical_order(at.job.as_bytes(), at.round, &keys)?;
        let identities = self
            .participants
            .iter()
            .map(|(agent, key)| {
                ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| {
                    tg_secagg::SecAggError::Params(format!(
                        "identity key of {agent} is not a valid Ed25519 point"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ctx = tg_secagg::crypto::Context::new(*at.job.as_bytes(), at.round);
        // Everything else the round depends on (clipping, noise, encoding,
        // sparsification, weighting) is bound into the configuration's digest,
        // so two agents offered different parameters cannot complete a round.
        let offer = postcard::to_allocvec(&(self, dim as u64)).map_err(|e| {
            tg_secagg::SecAggError::Params(format!("cannot encode the round's parameters: {e}"))
        })?;
        let binding: [u8; 32] = tg_secagg::crypto::digest(b"tensorguard-secure-round", &offer);
        let cfg = tg_secagg::RoundConfig::new(
            ctx,
            identities,
            encoding.padded,
            self.bits,
            self.corrupt,
            self.dropout,
        )?
        .with_min_survivors(self.min_survivors.map_or(0, |m| m as usize))
        .with_prg(self.prg)
        .with_binding(binding);
        Ok((cfg, encoding))
    }

    /// Lists `participants` (with their certificates, if any) in the round's
    /// canonical order (by [`tg_secagg::round::position_key`]), as every
    /// agent checks.
    pub fn seat(
        at: RoundRef,
        participants: &mut [(AgentId, [u8; 32], Option<crate::Certificate>)],
    ) {
        participants.sort_by_key(|(_, k, _)| {
            tg_secagg::round::position_key(at.job.as_bytes(), at.round, k)
        });
    }

    /// Checks that every participant is certified by the fleet `root` at
    /// `now` (Unix seconds): the coordinator cannot add identities of its own.
    pub fn check_certificates(&self, root: &[u8; 32], now: u64) -> Result<(), String> {
        if self.certificates.len() != self.participants.len() {
            return Err(format!(
                "{} of {} participants carry a fleet certificate",
                self.certificates.len(),
                self.participants.len()
            ));
        }
        for ((agent, key), cert) in self.participants.iter().zip(&self.certificates) {
            cert.verify(root, key, now)
                .map_err(|e| format!("participant {agent}: {e}"))?;
        }
        Ok(())
    }

    /// The round index of `agent`, if it takes part.
    pub fn index_of(&self, agent: &AgentId) -> Option<u32> {
        self.participants
            .iter()
            .position(|(a, _)| a == agent)
            .map(|i| i as u32)
    }
}
