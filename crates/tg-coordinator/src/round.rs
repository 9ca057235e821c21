//! One round: select, broadcast, collect until done or deadline, aggregate,
//! gate, commit.

use std::collections::BTreeMap;
use std::time::Instant;

use tg_model::Evaluation;
use tg_proto::{RoundRef, ToAgent, ToCoordinator, TrainRequest};
use tg_strategy::{Fold, StrategyError};
use tg_types::record::{
    ParticipantOutcome, ParticipantRecord, RoundRecord, RoundStage, RoundStatus,
};
use tg_types::{AgentId, Parameters};

use crate::{Coordinator, Incoming, Outgoing, Result, Transport, TransportEvent};

/// A selected agent's state within the round.
enum Slot {
    Pending,
    Done {
        num_examples: u64,
        loss: Option<f64>,
        bytes: u64,
        epsilon: Option<f64>,
    },
    Dropped,
    Rejected {
        reason: String,
        bytes: u64,
    },
}

pub(crate) type Committed = Option<(Parameters, Option<Evaluation>)>;

/// A round record that has not happened yet (failed until it commits).
pub(crate) fn new_record(round: u32) -> RoundRecord {
    RoundRecord {
        round,
        status: RoundStatus::Failed,
        accuracy: None,
        loss: None,
        selected: 0,
        participants: 0,
        upload_bytes: 0,
        download_bytes: 0,
        duration_ms: 0,
        reason: None,
        model_sha256: None,
        parent_sha256: None,
        participants_detail: Vec::new(),
        epsilon: None,
        federated: None,
        gate: None,
        experts: Vec::new(),
        screened: Vec::new(),
        reputation: Vec::new(),
    }
}

impl<T: Transport> Coordinator<'_, T> {
    pub(crate) async fn run_round(
        &mut self,
        round: u32,
        global: &Parameters,
    ) -> Result<(RoundRecord, Committed)> {
        let started = Instant::now();
        let at = RoundRef {
            job: self.config.job,
            round,
        };
        let mut record = new_record(round);

        // Select, leaving out agents that reputation excluded (and telling
        // the strategy the others' weights).
        let available = self.eligible(self.transport.connected())?;
        let plan = match self.select(round, global, &available)? {
            Ok(plan) => plan,
            Err(reason) => {
                record.reason = Some(reason);
                return self.finish(record, started, None).await;
            }
        };
        record.selected = plan.selected.len() as u32;
        self.stage(round, RoundStage::Selected).await?;

        // Broadcast. An agent over its owner's byte envelope may sparsify
        // (top-k) when the strategy can fold sparse updates.
        let mut config = self.config.train;
        config.adaptive_sparsity = self.strategy.takes_sparse_updates();
        config.deadline_ms = Some(self.config.round_deadline.as_millis() as u64);
        let message = Outgoing::encode(&ToAgent::Train(TrainRequest {
            at,
            global: global.clone(),
            config,
            objective: plan.objective,
            secure: None,
        }))?
        .prepare(self.transport.packs())
        .await?;
        let mut slots: BTreeMap<AgentId, Slot> = BTreeMap::new();
        for agent in &plan.selected {
            let sent = self.transport.send(agent, &message).await;
            record.download_bytes += sent.as_ref().map_or(0, |b| *b);
            slots.insert(
                agent.clone(),
                if sent.is_ok() {
                    Slot::Pending
                } else {
                    Slot::Dropped
                },
            );
        }

        self.stage(round, RoundStage::ModelSent).await?;

        // Collect until every selected agent answered or dropped, or the
        // deadline, folding each update in as it arrives (O(model) memory).
        let mut fold = Fold::new(self.strategy.fold_rule(), global, plan.selected.len());
        let deadline = tokio::time::sleep(self.config.round_deadline);
        tokio::pin!(deadline);
        while slots.values().any(|s| matches!(s, Slot::Pending)) {
            tokio::select! {
                event = self.transport.next_event() => match event {
                    None => return Err(crate::CoordinatorError::TransportClosed),
                    Some(TransportEvent::Disconnected(agent)) => {
                        if let Some(slot @ Slot::Pending) = slots.get_mut(&agent) {
                            *slot = Slot::Dropped;
                        }
                    }
                    Some(TransportEvent::Received { from, message, bytes }) => {
                        if let Some(slot @ Slot::Pending) = slots.get_mut(&from) {
                            let sealing = self.config.sealing.as_deref();
                            *slot = judge(at, &from, &message, bytes, &mut fold, config, sealing);
                        }
                        // Frames from unselected agents or earlier rounds are ignored.
                    }
                },
                () = &mut deadline => break,
            }
        }

        self.stage(round, RoundStage::Collected).await?;
        let mut rejections = Vec::new();
        for (agent, slot) in slots {
            let (outcome, examples, loss, bytes) = match slot {
                Slot::Done {
                    num_examples,
                    loss,
                    bytes,
                    epsilon,
                } => {
                    if let Some(e) = epsilon {
                        self.agent_epsilon = Some(self.agent_epsilon.map_or(e, |m| m.max(e)));
                    }
                    (ParticipantOutcome::Contributed, num_examples, loss, bytes)
                }
                Slot::Pending | Slot::Dropped => (ParticipantOutcome::Dropped, 0, None, 0),
                Slot::Rejected { reason, bytes } => {
                    rejections.push(format!("{agent}: {reason}"));
                    (ParticipantOutcome::Rejected, 0, None, bytes)
                }
            };
            record.upload_bytes += bytes;
            record.participants_detail.push(ParticipantRecord {
                agent,
                outcome,
                num_examples: examples,
                train_loss: loss,
                upload_bytes: bytes,
            });
        }
        record.participants = fold.count() as u32;

        // Quorum.
        if fold.count() < self.config.min_results {
            let mut reason = format!(
                "below quorum: {} of {} selected agents returned usable updates, quorum is {}",
                fold.count(),
                record.selected,
                self.config.min_results
            );
            if let Some(first) = rejections.first() {
                reason.push_str(&format!(" (rejected: {first})"));
            }
            record.reason = Some(reason);
            return self.finish(record, started, None).await;
        }

        self.aggregate_and_commit(record, started, round, global, fold)
            .await
    }

    /// The strategy's plan for the round, or why the round cannot start.
    pub(crate) fn select(
        &mut self,
        round: u32,
        global: &Parameters,
        available: &[AgentId],
    ) -> Result<Result<tg_strategy::TrainPlan, String>> {
        match self
            .strategy
            .configure_train(round, global, available, &mut self.rng)
        {
            Ok(plan) => Ok(Ok(plan)),
            Err(e @ StrategyError::BelowQuorum { .. }) => Ok(Err(format!("not started: {e}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Aggregates, applies the evaluation gate and records the round.
    pub(crate) async fn aggregate_and_commit(
        &mut self,
        mut record: RoundRecord,
        started: Instant,
        round: u32,
        global: &Parameters,
        fold: Fold,
    ) -> Result<(RoundRecord, Committed)> {
        let applied = self.strategy.apply(round, global, fold);
        record.screened = self.screen_records(round);
        // Reputation counts the screening whether or not the round commits:
        // an attacker's flags do not depend on the others' outcome.
        record.reputation = self.observe_screening(round, &record.screened)?;
        let candidate = match applied {
            Ok(c) => c,
            Err(StrategyError::Rejected(why)) => {
                record.reason = Some(format!("the strategy did not aggregate: {why}"));
                return self.finish(record, started, None).await;
            }
            Err(e) => return Err(e.into()),
        };
        record.experts = self.strategy.expert_steps();
        if !candidate.all_finite() {
            record.reason = Some("evaluation gate: aggregated model has non-finite values".into());
            return self.finish(record, started, None).await;
        }
        let eval = self.evaluator.evaluate(&candidate)?;
        if let Some(e) = &eval
            && !e.loss.is_finite()
        {
            record.reason = Some("evaluation gate: held-out loss is not finite".into());
            return self.finish(record, started, None).await;
        }
        if let Some(gate) = self.config.gate {
            // Both models in one request per agent (agents answer one per
            // round), on its own held-out episodes: paired by construction.
            let (answers, asked) = self
                .ask_evaluations(round, &candidate, Some(global))
                .await?;
            // A majority of those asked must judge: a few agents (or one
            // that claims many episodes, capped) cannot decide alone.
            let judges = answers.len() as u32;
            let tried =
                crate::federated::successes(answers.iter().map(|a| &a.model), gate.min_episodes);
            let kept = crate::federated::successes(
                answers.iter().filter_map(|a| a.baseline.as_ref()),
                gate.min_episodes,
            );
            let verdict = (2 * judges > asked)
                .then(|| gate.judge(tried, kept))
                .flatten();
            match verdict {
                None => {
                    record.reason = Some(format!(
                        "rollout gate: cannot judge — {judges} of {asked} agents answered (a majority must), with {} episodes of the candidate and {} of the current model (the gate needs {} each); the current model stays",
                        tried.episodes, kept.episodes, gate.min_episodes
                    ));
                    return self.finish(record, started, None).await;
                }
                Some(mut verdict) => {
                    // Per task, each judge counts for at most the
                    // episodes its totals count for.
                    let capped: Vec<_> = answers
                        .iter()
                        .map(|a| {
                            tg_types::record::capped_task_successes(
                                &a.tasks,
                                a.model.num_examples,
                                gate.min_episodes.max(1),
                            )
                        })
                        .collect();
                    verdict.tasks =
                        tg_types::record::sum_task_successes(capped.iter().map(Vec::as_slice));
                    let passed = verdict.passed;
                    if !passed {
                        record.reason = Some(format!(
                            "rollout gate rejected the candidate: {verdict}; the current model stays"
                        ));
                    }
                    record.gate = Some(verdict);
                    if !passed {
                        return self.finish(record, started, None).await;
                    }
                }
            }
        }
        record.status = RoundStatus::Committed;
        record.accuracy = eval.map(|e| e.accuracy);
        record.loss = eval.map(|e| e.loss);
        self.finish(record, started, Some((candidate, eval))).await
    }

    /// Stamps the duration and durably records the round (with its model).
    pub(crate) async fn finish(
        &mut self,
        mut record: RoundRecord,
        started: Instant,
        committed: Committed,
    ) -> Result<(RoundRecord, Committed)> {
        record.duration_ms = started.elapsed().as_millis() as u64;
        record.parent_sha256.clone_from(&self.base);
        let mut committed = committed;
        if committed.is_some()
            && let Some(head) = self.rolled_back_during_round()?
        {
            // Never commit over an operator's rollback: this candidate grew
            // from the version the operator moved away from.
            record.status = RoundStatus::Failed;
            record.accuracy = None;
            record.loss = None;
            record.reason = Some(format!(
                "an operator rolled the job back to version {} during this round; its candidate (trained from the replaced version) is discarded",
                &head[..head.len().min(12)]
            ));
            committed = None;
        }
        let bytes = match &committed {
            Some((params, _)) => Some(params.to_safetensors()?),
            None => None,
        };
        let reputations = std::mem::take(&mut self.pending_reputation);
        self.store.record_round_with(
            self.config.job,
            &mut record,
            bytes.as_deref(),
            &reputations,
        )?;
        if committed.is_some() {
            self.base.clone_from(&record.model_sha256);
        }
        let stage = if committed.is_some() {
            RoundStage::Committed
        } else {
            RoundStage::Failed
        };
        self.stage(record.round, stage).await?;
        Ok((record, committed))
    }
}

/// Decides what a reply from a pending agent is worth, folding a usable
/// update into the round's sum (and dropping it) on the spot.
fn judge(
    at: RoundRef,
    from: &AgentId,
    message: &Incoming,
    bytes: u64,
    fold: &mut Fold,
    config: tg_types::spec::TrainConfig,
    sealing: Option<&tg_proto::SessionSecret>,
) -> Slot {
    let rejected = |reason: String| Slot::Rejected { reason, bytes };
    // A sealed reply is opened here, inside the aggregator, and read as an
    // unsealed one is; an attested aggregator takes nothing unsealed.
    let opened;
    let frame: &[u8] = match (message, sealing) {
        (Incoming::Message(ToCoordinator::Sealed(sealed)), Some(secret)) => {
            if sealed.at != at || &sealed.agent != from {
                return rejected("sealed reply is for another round or sender".into());
            }
            opened = match secret.open(sealed) {
                Ok(plain) => plain,
                Err(e) => return rejected(format!("unopenable sealed reply: {e}")),
            };
            &opened
        }
        (Incoming::Message(ToCoordinator::Sealed(_)), None) => {
            return rejected("a sealed reply in a job without an attested aggregator".into());
        }
        (Incoming::Trained(_), Some(_)) => {
            return rejected(
                "an unsealed update in a job with an attested aggregator (it must be sealed to the aggregator's session key)"
                    .into(),
            );
        }
        (Incoming::Trained(frame), None) => frame,
        _ => &[],
    };
    // A training reply is read in place and folded from the frame's bytes.
    let r = match message {
        Incoming::Trained(_) | Incoming::Message(ToCoordinator::Sealed(_)) => {
            match tg_proto::decode_trained(frame) {
                Err(e) => return rejected(format!("undecodable reply: {e}")),
                Ok(Some(r)) => r,
                Ok(None) => return rejected("unexpected message kind during training".into()),
            }
        }
        Incoming::Message(ToCoordinator::Declined { reason, .. }) => {
            return rejected(format!("declined: {reason}"));
        }
        Incoming::Message(_) => {
            return rejected("unexpected message kind during training".into());
        }
        Incoming::Undecodable(e) => return rejected(format!("undecodable reply: {e}")),
    };
    if r.at != at || &r.agent != from {
        return rejected("reply is for another round or sender".into());
    }
    if r.train_loss.is_some_and(|l| !l.is_finite()) {
        return rejected("training loss is not finite".into());
    }
    // An update arrives in the form the round asked for, or top-k when the
    // round let agents sparsify to fit their envelope; nothing else (a
    // strategy that cannot fold it would be fed a partial update).
    if let Some(c) = &r.compressed {
        use tg_compress::BodyView;
        use tg_types::spec::Compression;
        let allowed = match (&c.body, config.compress) {
            (BodyView::TopK { .. }, Compression::TopK(_))
            | (BodyView::Q8 { .. }, Compression::Q8) => true,
            (BodyView::TopK { .. }, _) => config.adaptive_sparsity,
            _ => false,
        };
        if !allowed {
            return rejected(format!(
                "a compressed update this round did not allow (it asked for {}{})",
                config.compress,
                if config.adaptive_sparsity {
                    ", or top-k to fit an envelope"
                } else {
                    ""
                }
            ));
        }
    }
    if r.num_examples == 0 {
        return rejected("update trained on zero examples".into());
    }
    if r.epsilon.is_some_and(|e| !(e >= 0.0)) {
        return rejected("reported ε is not a non-negative number".into());
    }
    // Layout, finiteness and range are checked by the fold, which refuses an
    // update whole.
    let folded = match &r.compressed {
        // Compressed: folded lane by lane from the frame, never expanded.
        Some(c) => {
            let layout = fold.layout().to_vec();
            let shaped = tg_compress::Shaped::new(c, &layout);
            fold.add_parts(&r.agent, r.num_examples, &shaped, r.control_delta.as_ref())
        }
        None => fold.add_parts(
            &r.agent,
            r.num_examples,
            &r.update,
            r.control_delta.as_ref(),
        ),
    };
    if let Err(e) = folded {
        return rejected(format!("not aggregable: {e}"));
    }
    Slot::Done {
        num_examples: r.num_examples,
        loss: r.train_loss,
        bytes,
        epsilon: r.epsilon,
    }
}
