//! A round under secure aggregation: the coordinator relays the SecAgg+
//! stages and learns only the survivors' sum.
//!
//! Design decision: this path never sees an update. Agents answer the
//! training request with signed protocol messages; the coordinator feeds them
//! to a `tg_secagg::Server`, whose only output is the unmasked *sum*; the sum
//! is decoded, divided by the number of survivors and handed to the strategy
//! as one update. A plaintext update arriving here is rejected unread.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use rand::RngCore;
use tg_proto::{RoundRef, SecAggToAgent, SecureRound, ToAgent, ToCoordinator, TrainRequest};
use tg_secagg::Server;
use tg_secagg::messages::Stage;
use tg_strategy::ClientUpdate;
use tg_types::record::{ParticipantOutcome, ParticipantRecord, RoundRecord, RoundStage};
use tg_types::{AgentId, Parameters};

use crate::round::{Committed, new_record};
use crate::{
    Coordinator, CoordinatorError, Incoming, Outgoing, Result, SecureSettings, Transport,
    TransportEvent,
};

impl<T: Transport> Coordinator<'_, T> {
    pub(crate) async fn run_secure_round(
        &mut self,
        round: u32,
        global: &Parameters,
        settings: &SecureSettings,
    ) -> Result<(RoundRecord, Committed)> {
        let started = Instant::now();
        let at = RoundRef {
            job: self.config.job,
            round,
        };
        let mut record = new_record(round);

        // Select agents that have an identity on file.
        let available: Vec<AgentId> = self
            .transport
            .connected()
            .into_iter()
            .filter(|a| identity(settings, &self.transport, a).is_some())
            .collect();
        let plan = match self.select(round, global, &available)? {
            Ok(plan) => plan,
            Err(reason) => {
                record.reason = Some(reason);
                return self.finish(record, started, None).await;
            }
        };
        record.selected = plan.selected.len() as u32;
        self.stage(round, RoundStage::Selected).await?;
        let mut rotation_seed = [0u8; 32];
        self.rng.fill_bytes(&mut rotation_seed);
        // Distributed DP: split the central noise over this round's survivor minimum.
        // Only agents with an identity were offered to the strategy.
        let n_sampled = plan.selected.len() as u32;
        let round_noise = match settings.noise {
            None => None,
            Some(d) => match d.round_noise(n_sampled) {
                Some(x) => Some(x),
                None => {
                    record.reason = Some(format!(
                        "not started: {n_sampled} clients sampled, too few to carry the DP noise of \
                         {} survivors",
                        d.min_survivors
                    ));
                    return self.finish(record, started, None).await;
                }
            },
        };
        let mut seated: Vec<(AgentId, [u8; 32], Option<tg_proto::Certificate>)> = plan
            .selected
            .iter()
            .filter_map(|a| {
                identity(settings, &self.transport, a)
                    .map(|k| (a.clone(), k, self.transport.certificate(a)))
            })
            .collect();
        SecureRound::seat(at, &mut seated);
        // Certificates travel only when every participant has one.
        let certificates: Vec<tg_proto::Certificate> = if seated.iter().all(|s| s.2.is_some()) {
            seated.iter().filter_map(|s| s.2.clone()).collect()
        } else {
            Vec::new()
        };
        let secure = SecureRound {
            participants: seated.into_iter().map(|(a, k, _)| (a, k)).collect(),
            certificates,
            bits: settings.spec.bits,
            clip: settings.spec.clip,
            corrupt: settings.spec.corrupt,
            dropout: settings.spec.dropout,
            rotation_seed,
            weight_scale: settings.weight_scale,
            keep_fraction: settings.spec.keep_fraction,
            local_noise_variance: round_noise.map(|(_, v)| v),
            max_clients: settings.noise.map(|d| d.max_clients),
            min_survivors: round_noise.map(|(m, _)| m),
            scale: settings.noise.map(|d| d.scale),
            prg: settings.prg,
        };
        let coordinates = secure.coordinates(global.num_values());
        let dim = secure.dim_for(global.num_values());
        let (cfg, encoding) = match secure.build(at, dim) {
            Ok(x) => x,
            Err(e) => {
                record.reason = Some(format!("secure aggregation not started: {e}"));
                return self.finish(record, started, None).await;
            }
        };
        let index: BTreeMap<AgentId, u32> = secure
            .participants
            .iter()
            .enumerate()
            .map(|(i, (a, _))| (a.clone(), i as u32))
            .collect();
        let mut server = Server::new(cfg);

        let message = Outgoing::encode(&ToAgent::Train(TrainRequest {
            at,
            global: global.clone(),
            config: self.config.train,
            objective: plan.objective,
            secure: Some(Box::new(secure.clone())),
        }))?
        .prepare(self.transport.packs())
        .await?;
        let mut gone: BTreeSet<u32> = BTreeSet::new();
        let mut upload: BTreeMap<u32, u64> = BTreeMap::new();
        for (agent, &i) in &index {
            match self.transport.send(agent, &message).await {
                Ok(bytes) => record.download_bytes += bytes,
                Err(_) => {
                    gone.insert(i);
                }
            }
        }

        self.stage(round, RoundStage::ModelSent).await?;
        let mut rejections: Vec<String> = Vec::new();
        let mut first_stage = true;
        let outcome = loop {
            // Collect the current stage, until its own deadline: training and
            // the first upload get the round deadline, later stages theirs.
            let stage = server.stage();
            let deadline = tokio::time::sleep(if first_stage {
                self.config.round_deadline
            } else {
                self.config.stage_deadline
            });
            tokio::pin!(deadline);
            first_stage = false;
            let mut timed_out = false;
            let mut answered: BTreeSet<u32> = BTreeSet::new();
            while !timed_out
                && server
                    .expected()
                    .iter()
                    .any(|i| !answered.contains(i) && !gone.contains(i))
            {
                tokio::select! {
                    event = self.transport.next_event() => match event {
                        None => return Err(CoordinatorError::TransportClosed),
                        Some(TransportEvent::Disconnected(agent)) => {
                            if let Some(&i) = index.get(&agent) { gone.insert(i); }
                        }
                        Some(TransportEvent::Received { from, message, bytes }) => {
                            let Some(&i) = index.get(&from) else { continue };
                            *upload.entry(i).or_default() += bytes;
                            match message {
                                Incoming::Message(ToCoordinator::SecAgg(m)) if m.at == at && m.agent == from && m.msg.from == i => {
                                    if m.msg.body.stage() != stage {
                                        rejections.push(format!("{from}: message for another stage"));
                                        continue;
                                    }
                                    match server.receive(m.msg) {
                                        Ok(()) => { answered.insert(i); }
                                        Err(e) => { rejections.push(format!("{from}: {e}")); gone.insert(i); }
                                    }
                                }
                                Incoming::Message(ToCoordinator::Declined { reason, .. }) => {
                                    rejections.push(format!("{from}: declined: {reason}"));
                                    gone.insert(i);
                                }
                                Incoming::Trained(_) | Incoming::Message(ToCoordinator::Trained(_)) => {
                                    // A plaintext update has no place in a secure round.
                                    rejections.push(format!("{from}: sent a plaintext update in a secure round"));
                                    gone.insert(i);
                                }
                                Incoming::Message(_) => rejections.push(format!("{from}: message for another round or sender")),
                                Incoming::Undecodable(e) => rejections.push(format!("{from}: undecodable: {e}")),
                            }
                        }
                    },
                    () = &mut deadline => { timed_out = true; }
                }
            }
            self.stage(round, collected(stage)).await?;
            if stage == Stage::Unmask {
                let sum = server.finish(settings.threads);
                if sum.is_ok() {
                    self.stage(round, RoundStage::Unmasked).await?;
                }
                break sum;
            }
            match server.close_stage() {
                Ok(routed) => {
                    for (i, body) in routed {
                        let Some((agent, _)) = secure.participants.get(i as usize) else {
                            continue;
                        };
                        let message =
                            Outgoing::encode(&ToAgent::SecAgg(SecAggToAgent { at, body }))?;
                        match self.transport.send(agent, &message).await {
                            Ok(bytes) => record.download_bytes += bytes,
                            Err(_) => {
                                gone.insert(i);
                            }
                        }
                    }
                }
                Err(e) => break Err(e),
            }
        };

        let survivors: BTreeSet<u32> = match &outcome {
            Ok(sum) => sum.survivors.iter().copied().collect(),
            Err(_) => BTreeSet::new(),
        };
        for (agent, &i) in &index {
            let bytes = upload.get(&i).copied().unwrap_or(0);
            record.upload_bytes += bytes;
            record.participants_detail.push(ParticipantRecord {
                agent: agent.clone(),
                outcome: if survivors.contains(&i) {
                    ParticipantOutcome::Contributed
                } else {
                    ParticipantOutcome::Dropped
                },
                num_examples: 0,
                train_loss: None,
                upload_bytes: bytes,
            });
        }
        record.participants = survivors.len() as u32;
        let sum = match outcome {
            Ok(sum) => sum,
            Err(e) => {
                let mut reason = format!("secure aggregation failed: {e}");
                if let Some(first) = rejections.first() {
                    reason.push_str(&format!(" (first problem: {first})"));
                }
                record.reason = Some(reason);
                return self.finish(record, started, None).await;
            }
        };
        if sum.survivors.len() < self.config.min_results {
            record.reason = Some(format!(
                "below quorum: {} agents survived secure aggregation, quorum is {}",
                sum.survivors.len(),
                self.config.min_results
            ));
            return self.finish(record, started, None).await;
        }
        let decoded = match encoding.decode_sum(&sum.sum) {
            Ok(d) => d,
            Err(e) => {
                record.reason = Some(format!("cannot decode the aggregate: {e}"));
                return self.finish(record, started, None).await;
            }
        };
        // Σ w·update and Σ w: the weighted mean. Under distributed DP the
        // denominator is the fixed expected count qN (so one client's
        // influence is bounded whatever the sample), not the noisy Σ w.
        // Without a weight scale every honest client's lane is 1, so the
        // count of survivors is the same divisor, and one that no client can
        // poison by sending another value there.
        let total_weight = match (settings.noise, settings.weight_scale) {
            (Some(d), _) => (d.client_sampling_rate.get() * f64::from(d.population)) as f32,
            (None, None) => sum.survivors.len() as f32,
            (None, Some(_)) => decoded.last().copied().unwrap_or(0.0),
        };
        if !(total_weight > 0.0) {
            record.reason = Some(format!(
                "the aggregate weight {total_weight} is not positive; nothing to average"
            ));
            return self.finish(record, started, None).await;
        }
        // Unsent coordinates stay zero; sent ones are scaled by 1/keep so the
        // sparsified mean is unbiased.
        let keep = coordinates.len() as f32 / global.num_values().max(1) as f32;
        let mut dense = vec![0f32; global.num_values()];
        for (&i, v) in coordinates.iter().zip(&decoded) {
            dense[i] = v / total_weight / keep;
        }
        let mut mean = global.zeros_like();
        for (m, v) in mean.values_mut().zip(&dense) {
            *m = *v;
        }
        let as_one = ClientUpdate {
            agent: secure.participants[sum.survivors[0] as usize].0.clone(),
            update: mean,
            num_examples: 1,
            control_delta: None,
        };
        let mut fold = tg_strategy::Fold::new(self.strategy.fold_rule(), global, 1);
        if let Err(e) = fold.add(&as_one) {
            record.reason = Some(format!("the unmasked sum is not aggregable: {e}"));
            return self.finish(record, started, None).await;
        }
        self.aggregate_and_commit(record, started, round, global, fold)
            .await
    }
}

/// The round stage a SecAgg+ stage reaches once collected.
fn collected(stage: Stage) -> RoundStage {
    match stage {
        Stage::AdvertiseKeys => RoundStage::AdvertiseKeysCollected,
        Stage::ShareKeys => RoundStage::ShareKeysCollected,
        Stage::MaskedInput => RoundStage::MaskedInputCollected,
        Stage::ConsistencyCheck => RoundStage::ConsistencyCheckCollected,
        Stage::Unmask => RoundStage::UnmaskCollected,
    }
}

/// An agent's identity: configured, or authenticated by the transport.
fn identity<T: Transport>(
    settings: &SecureSettings,
    transport: &T,
    agent: &AgentId,
) -> Option<[u8; 32]> {
    settings
        .identities
        .get(agent)
        .copied()
        .or_else(|| transport.identity(agent))
}
