//! The agent's part in secure aggregation: its update enters the round only
//! as a masked vector.
//!
//! Design decision: after local training in a secure round the update is
//! encoded and handed to a `tg_secagg::Client`; from then on only signed
//! protocol messages leave the agent, and the session (with its secrets) is
//! dropped when the round ends or anything goes wrong.

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tg_proto::{
    DeclineReason, RoundRef, SecAggToAgent, SecAggToCoordinator, SecureRound, ToCoordinator,
};
use tg_secagg::Client;
use tg_secagg::messages::{ServerBody, Signed};
use tg_types::Parameters;

use crate::Agent;

/// One round's protocol state on this agent.
pub(crate) struct Session {
    at: RoundRef,
    client: Client,
    rng: ChaCha20Rng,
}

/// Why a secure round could not start.
pub(crate) enum StartError {
    /// The owner's envelope (bytes on the wire) refuses it.
    Envelope(String),
    /// Anything else.
    Failed(String),
}

impl From<String> for StartError {
    fn from(s: String) -> Self {
        Self::Failed(s)
    }
}

impl From<&str> for StartError {
    fn from(s: &str) -> Self {
        Self::Failed(s.to_owned())
    }
}

/// An upper bound of the bytes one agent sends in a secure round of
/// `lanes` lanes of `bits` bits with `degree` neighbours: the masked vector,
/// per neighbour a sealed pair of Shamir shares (≤ 256 bytes with its
/// framing), its index in the commitment (≤ 5) and an unmasking share
/// (≤ 128), and 4 frames of signature, header and key material (≤ 1 kB each).
pub(crate) fn secure_upload_bound(lanes: usize, bits: u32, degree: usize) -> u64 {
    (lanes as u64 * u64::from(bits)).div_ceil(8) + degree as u64 * (256 + 5 + 128) + 4 * 1024
}

fn os_rng() -> Result<ChaCha20Rng, String> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| format!("the OS random number generator failed: {e}"))?;
    Ok(ChaCha20Rng::from_seed(seed))
}

impl Agent {
    /// Enters the secure round with `update`; the reply is the signed key
    /// advertisement (or a decline with the reason).
    pub(crate) fn start_secure(
        &mut self,
        at: RoundRef,
        secure: &SecureRound,
        update: &Parameters,
        dp_sgd: bool,
    ) -> ToCoordinator {
        match self.try_start_secure(at, secure, update, dp_sgd) {
            Ok(msg) => self.secagg_reply(at, msg),
            Err(StartError::Envelope(why)) => {
                self.session = None;
                self.declined(at, DeclineReason::OwnerFloor, &why)
            }
            Err(StartError::Failed(reason)) => {
                self.session = None;
                self.declined(at, DeclineReason::SecAggFailed, &reason)
            }
        }
    }

    fn try_start_secure(
        &mut self,
        at: RoundRef,
        secure: &SecureRound,
        update: &Parameters,
        dp_sgd: bool,
    ) -> Result<Signed, StartError> {
        let identity = self
            .identity
            .clone()
            .ok_or("this agent has no identity key to sign protocol messages")?;
        let me = secure
            .index_of(&self.id)
            .ok_or("this agent is not in the round's participant list")?;
        if secure.participants[me as usize].1 != identity.verifying_key().to_bytes() {
            return Err("the round lists another identity key for this agent".into());
        }
        let values = values_to_encode(secure, update, self.learner.num_examples(), dp_sgd)?;
        let (cfg, encoding) = secure.build(at, values.len()).map_err(|e| e.to_string())?;
        // Keys and nonces come from the OS. The encoding's stochastic rounding
        // is dither, not a secret (the masks hide the input; distributed DP's
        // noise below stays OS-drawn): seeding it as local training is seeded
        // makes a secure round reproducible, in process or on a fleet.
        let mut rng = os_rng()?;
        let mut dither = ChaCha20Rng::seed_from_u64(self.round_seed(at) ^ 0xd17e_5eed_0000_0000);
        let lanes = match secure.local_noise_variance {
            // Distributed DP: this agent's Skellam share, exact integers from the OS CSPRNG.
            Some(variance) => {
                let mut noise_rng = tg_privacy::NoiseRng::from_os().map_err(|e| e.to_string())?;
                let mut share = || {
                    noise_rng
                        .skellam(variance)
                        .map_err(|e| tg_compress::EncodeError::Noise(e.to_string()))
                };
                encoding.encode(&values, &mut dither, Some(&mut share))
            }
            None => encoding.encode(&values, &mut dither, None),
        }
        .map_err(|e| e.to_string())?;
        // The owner's envelope, against everything this round sends: the
        // masked vector (d·B/8 bytes), a sealed pair of shares per
        // neighbour, the mask commitment, up to a share per neighbour when
        // unmasking, and each frame's signature and framing. A secure round
        // cannot be sparsified by one agent.
        let upload = secure_upload_bound(lanes.len(), cfg.bits, cfg.graph.degree);
        if let Some(budget) = self.upload_budget(self.seconds_left(at))
            && upload > budget
        {
            return Err(StartError::Envelope(format!(
                "this secure round sends up to {upload} bytes from this machine (its masked vector and {} neighbours' shares); this machine's envelope allows {budget} now (max_update_bytes, or its uplink)",
                cfg.graph.degree
            )));
        }
        let (client, msg) = Client::new(
            cfg,
            me,
            identity,
            lanes,
            &self.policy.secure_aggregation,
            &mut rng,
        )
        .map_err(|e| e.to_string())?;
        self.session = Some(Session { at, client, rng });
        Ok(msg)
    }

    /// Handles the next stage of the current secure round.
    pub(crate) fn on_secagg(&mut self, m: &SecAggToAgent) -> ToCoordinator {
        let Some(mut s) = self.session.take() else {
            return self.declined(m.at, DeclineReason::SecAggNoRound, "");
        };
        if s.at != m.at {
            return self.declined(m.at, DeclineReason::SecAggWrongRound, "");
        }
        let done = matches!(m.body, ServerBody::SurvivorSignatures(_));
        let result = match &m.body {
            ServerBody::NeighbourKeys(k) => s.client.on_neighbour_keys(k, &mut s.rng),
            ServerBody::SharesForYou(x) => s.client.on_shares(x),
            ServerBody::Survivors(x) => s.client.on_survivors(x),
            ServerBody::SurvivorSignatures(x) => s.client.on_survivor_signatures(x),
            _ => Err(tg_secagg::SecAggError::Protocol("unknown stage".into())),
        };
        match result {
            Ok(msg) => {
                if !done {
                    self.session = Some(s);
                }
                self.secagg_reply(m.at, msg)
            }
            Err(e) => self.declined(m.at, DeclineReason::SecAggFailed, &e.to_string()),
        }
    }

    fn secagg_reply(&self, at: RoundRef, msg: Signed) -> ToCoordinator {
        ToCoordinator::SecAgg(SecAggToCoordinator {
            at,
            agent: self.id.clone(),
            msg,
        })
    }
}

/// The vector an agent encodes: its (weighted) update on the round's
/// coordinates, then the weight lane. Under any DP the dataset size is
/// private, so the weight is 1 whatever the offer's weight scale (a scale
/// would release the size without noise); under distributed DP the
/// coordinator divides by the fixed qN, so the weight lane carries 0.
pub(crate) fn values_to_encode(
    secure: &SecureRound,
    update: &Parameters,
    examples: usize,
    dp_sgd: bool,
) -> Result<Vec<f32>, String> {
    let private = dp_sgd || secure.local_noise_variance.is_some();
    let weight = match secure.weight_scale {
        _ if private => 1.0,
        Some(scale) if scale > 0.0 && scale.is_finite() => (examples as f64 / scale) as f32,
        Some(scale) => return Err(format!("invalid weight scale {scale}")),
        None => 1.0,
    };
    let all: Vec<f32> = update.values().collect();
    let mut values: Vec<f32> = secure
        .coordinates(all.len())
        .into_iter()
        .map(|i| all[i] * weight)
        .collect();
    values.push(if secure.local_noise_variance.is_some() {
        0.0
    } else {
        weight
    });
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_dp_the_dataset_size_never_enters_the_vector() {
        // The review's attack: DP-SGD in a secure round with weight_scale 1
        // would put the exact example count n in the weight lane, noiseless.
        let mut secure = SecureRound {
            participants: Vec::new(),
            certificates: Vec::new(),
            bits: 32,
            clip: 1e5,
            corrupt: 0.05,
            dropout: 0.1,
            rotation_seed: [0; 32],
            weight_scale: Some(1.0),
            keep_fraction: None,
            local_noise_variance: None,
            max_clients: None,
            min_survivors: None,
            scale: None,
            prg: tg_secagg::crypto::Prg::default(),
        };
        let update = Parameters::new(vec![tg_types::params::NamedTensor {
            name: "w".into(),
            shape: vec![2],
            data: vec![0.5, -0.25],
        }])
        .unwrap();
        let n = 1234;
        let plain = values_to_encode(&secure, &update, n, false).unwrap();
        assert_eq!(plain, vec![0.5 * 1234.0, -0.25 * 1234.0, 1234.0]);
        let dp = values_to_encode(&secure, &update, n, true).unwrap();
        assert_eq!(dp, vec![0.5, -0.25, 1.0]);
        secure.local_noise_variance = Some(4.0);
        let distributed = values_to_encode(&secure, &update, n, false).unwrap();
        assert_eq!(distributed, vec![0.5, -0.25, 0.0]);
    }
}
