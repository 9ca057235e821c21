//! Federated evaluation: after a round commits, on the job's schedule, the
//! strategy's chosen agents evaluate the new model on their own data and
//! the strategy combines their answers.
//!
//! It is informational, except in jobs with a rollout gate (`[job]
//! gate_margin`), where agents' answers about the candidate and the current
//! model decide whether the candidate commits (see `round.rs`). Otherwise
//! the gate that decides commits is the coordinator's held-out set, which
//! no agent touches. Replies
//! are checked (the round, the sender, finite loss, accuracy in [0, 1], at
//! least one example) and anything else is left out. An agent whose data is
//! under DP, or whose owner withholds metrics, declines.

use std::collections::BTreeSet;

use tg_proto::{EvaluateRequest, RoundRef, ToAgent, ToCoordinator};
use tg_strategy::ClientEvaluation;
use tg_types::Parameters;
use tg_types::record::{FederatedEvaluation, RoundStage};

use crate::{Coordinator, Incoming, Outgoing, Result, Transport, TransportEvent};

impl<T: Transport> Coordinator<'_, T> {
    /// Asks the strategy's choice of agents to evaluate `model` (and, for
    /// the rollout gate, `baseline` in the same answer: agents answer one
    /// request per round) and waits for their answers until the stage
    /// deadline: the usable answers, by agent, and how many were asked.
    /// With a baseline, an answer without a usable baseline figure is left
    /// out.
    pub(crate) async fn ask_evaluations(
        &mut self,
        round: u32,
        model: &Parameters,
        baseline: Option<&Parameters>,
    ) -> Result<(Vec<Answer>, u32)> {
        let at = RoundRef {
            job: self.config.job,
            round,
        };
        // Excluded agents judge nothing (they could sway the rollout gate).
        let excluded = self.excluded()?;
        let available: Vec<_> = self
            .transport
            .connected()
            .into_iter()
            .filter(|a| !excluded.contains(a))
            .collect();
        let chosen = self.strategy.configure_evaluate(round, &available);
        if chosen.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let message = Outgoing::encode(&ToAgent::Evaluate(EvaluateRequest {
            at,
            model: model.clone(),
            baseline: baseline.cloned(),
        }))?
        .prepare(self.transport.packs())
        .await?;
        let mut pending = BTreeSet::new();
        for agent in &chosen {
            if self.transport.send(agent, &message).await.is_ok() {
                pending.insert(agent.clone());
            }
        }
        let mut results = Vec::new();
        let deadline = tokio::time::sleep(self.config.stage_deadline);
        tokio::pin!(deadline);
        while !pending.is_empty() {
            tokio::select! {
                event = self.transport.next_event() => match event {
                    None => return Err(crate::CoordinatorError::TransportClosed),
                    Some(TransportEvent::Disconnected(agent)) => {
                        pending.remove(&agent);
                    }
                    Some(TransportEvent::Received { from, message, .. }) => {
                        if !pending.contains(&from) {
                            continue; // not asked, or already answered
                        }
                        // Only an answer to this request settles the agent; a
                        // late training reply does not.
                        match message {
                            Incoming::Message(ToCoordinator::Evaluated(r)) if r.at == at && r.agent == from => {
                                pending.remove(&from);
                                let figures = usable(r.num_examples, r.loss, r.accuracy);
                                let base = r.baseline.and_then(|b| usable(b.num_examples, b.loss, b.accuracy));
                                if let Some(f) = figures
                                    && (baseline.is_none() || base.is_some())
                                {
                                    // Per-task figures that do not add up
                                    // are dropped; the totals stay.
                                    let tasks = match tg_types::record::task_successes_problem(&r.tasks, r.num_examples, r.accuracy) {
                                        None => r.tasks,
                                        Some(why) => {
                                            tracing::info!(round, agent = %from, "per-task evaluation figures left out: {why}");
                                            Vec::new()
                                        }
                                    };
                                    results.push(Answer { model: f, baseline: base, tasks });
                                } else {
                                    tracing::info!(round, agent = %from, "federated evaluation left out: out of range");
                                }
                            }
                            Incoming::Message(ToCoordinator::Declined { at: a, agent, reason }) if a == at && agent == from => {
                                pending.remove(&from);
                                tracing::info!(round, agent = %from, "federated evaluation declined: {reason}");
                            }
                            _ => {}
                        }
                    }
                },
                () = &mut deadline => break,
            }
        }
        Ok((results, chosen.len() as u32))
    }

    /// Asks the strategy's choice of agents to evaluate `global`, waits for
    /// their answers until the stage deadline, records and returns the
    /// combined evaluation (None when nobody usable answered).
    pub(crate) async fn evaluate_federated(
        &mut self,
        round: u32,
        global: &Parameters,
    ) -> Result<Option<FederatedEvaluation>> {
        let (answers, asked) = self.ask_evaluations(round, global, None).await?;
        if asked == 0 {
            return Ok(None);
        }
        let tasks =
            tg_types::record::sum_task_successes(answers.iter().map(|a| a.tasks.as_slice()));
        let results: Vec<ClientEvaluation> = answers.into_iter().map(|a| a.model).collect();
        let answered = results.len() as u32;
        let Some(c) = self
            .strategy
            .aggregate_evaluate(&results)
            .filter(|c| c.loss.is_finite() && c.accuracy.is_finite())
        else {
            return Ok(None);
        };
        let evaluation = FederatedEvaluation {
            asked,
            answered,
            num_examples: c.num_examples,
            loss: c.loss,
            accuracy: c.accuracy,
            tasks,
        };
        self.store
            .set_round_federated(self.config.job, round, &evaluation)?;
        self.stage(round, RoundStage::Evaluated).await?;
        Ok(Some(evaluation))
    }
}

/// One agent's usable answer to an evaluation request.
pub(crate) struct Answer {
    /// The model's figures.
    pub(crate) model: ClientEvaluation,
    /// The baseline's, when asked.
    pub(crate) baseline: Option<ClientEvaluation>,
    /// The model's success counts per task, when the agent reported them
    /// and they add up (informational: the gate judges the totals).
    pub(crate) tasks: Vec<tg_types::record::TaskSuccesses>,
}

/// Figures in range (examples > 0, finite loss ≥ 0, accuracy in [0, 1]).
fn usable(num_examples: u64, loss: f64, accuracy: f64) -> Option<ClientEvaluation> {
    (num_examples > 0 && loss.is_finite() && loss >= 0.0 && (0.0..=1.0).contains(&accuracy))
        .then_some(ClientEvaluation {
            num_examples,
            loss,
            accuracy,
        })
}

/// Success counts from agents' evaluations: each answer's accuracy (its
/// success rate) times its episodes, the episodes capped at `cap` per
/// agent (one agent cannot outweigh the fleet by claiming many episodes),
/// rounded, summed without overflow.
pub(crate) fn successes<'a>(
    results: impl Iterator<Item = &'a ClientEvaluation>,
    cap: u64,
) -> tg_types::record::Successes {
    let (mut successes, mut episodes) = (0u64, 0u64);
    for r in results {
        let n = r.num_examples.min(cap.max(1));
        let won = (r.accuracy.clamp(0.0, 1.0) * n as f64).round() as u64;
        successes = successes.saturating_add(won.min(n));
        episodes = episodes.saturating_add(n);
    }
    tg_types::record::Successes {
        successes,
        episodes,
    }
}
