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
    ) -> ToCoordinator {
        match self.try_start_secure(at, secure, update) {
            Ok(msg) => self.secagg_reply(at, msg),
            Err(reason) => {
                self.session = None;
                self.declined(at, DeclineReason::SecAggFailed, &reason.to_string())
            }
        }
    }

    fn try_start_secure(
        &mut self,
        at: RoundRef,
        secure: &SecureRound,
        update: &Parameters,
    ) -> Result<Signed, String> {
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
        let weight = match secure.weight_scale {
            Some(scale) if scale > 0.0 && scale.is_finite() => {
                (self.train.len() as f64 / scale) as f32
            }
            Some(scale) => return Err(format!("invalid weight scale {scale}")),
            None => 1.0,
        };
        let all: Vec<f32> = update.values().collect();
        let mut values: Vec<f32> = secure
            .coordinates(all.len())
            .into_iter()
            .map(|i| all[i] * weight)
            .collect();
        // Under distributed DP the coordinator divides by the fixed qN, so the
        // weight lane would only spend clipping budget: send 0 there.
        values.push(if secure.local_noise_variance.is_some() {
            0.0
        } else {
            weight
        });
        let (cfg, encoding) = secure.build(at, values.len()).map_err(|e| e.to_string())?;
        let mut rng = os_rng()?;
        let lanes = match secure.local_noise_variance {
            // Distributed DP: this agent's Skellam share, exact integers from the OS CSPRNG.
            Some(variance) => {
                let mut noise_rng = tg_privacy::NoiseRng::from_os().map_err(|e| e.to_string())?;
                let mut share = || {
                    noise_rng
                        .skellam(variance)
                        .map_err(|e| tg_secagg::SecAggError::Params(e.to_string()))
                };
                encoding.encode(&values, &mut rng, Some(&mut share))
            }
            None => encoding.encode(&values, &mut rng, None),
        }
        .map_err(|e| e.to_string())?;
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
