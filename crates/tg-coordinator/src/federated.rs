//! Federated evaluation: after a round commits, on the job's schedule, the
//! strategy's chosen agents evaluate the new model on their own data and
//! the strategy combines their answers.
//!
//! It is informational. The evaluation gate that decides whether a model
//! commits is the coordinator's held-out set, which no agent touches, so an
//! agent that lies here skews a reported number, never the model. Replies
//! are checked (the round, the sender, finite loss, accuracy in [0, 1], at
//! least one example) and anything else is left out. An agent whose data is
//! under DP, or whose owner withholds metrics, declines.

use std::collections::BTreeSet;

use tg_proto::{EvaluateRequest, RoundRef, ToAgent, ToCoordinator};
use tg_strategy::ClientEvaluation;
use tg_types::record::{FederatedEvaluation, RoundStage};
use tg_types::{AgentId, Parameters};

use crate::{Coordinator, Incoming, Outgoing, Result, Transport, TransportEvent};

impl<T: Transport> Coordinator<'_, T> {
    /// Asks the strategy's choice of agents (within `only`, if given) to
    /// evaluate `model` and waits for their answers until the stage
    /// deadline: the usable answers, by agent, and how many were asked.
    ///
    /// Answers name only the round, so a second request in the same round
    /// must go only to agents that answered the first: a late answer to the
    /// first from anyone else would otherwise count for the second.
    pub(crate) async fn ask_evaluations(
        &mut self,
        round: u32,
        model: &Parameters,
        only: Option<&BTreeSet<AgentId>>,
    ) -> Result<(Vec<(AgentId, ClientEvaluation)>, u32)> {
        let at = RoundRef {
            job: self.config.job,
            round,
        };
        let available = self.transport.connected();
        let mut chosen = self.strategy.configure_evaluate(round, &available);
        if let Some(only) = only {
            chosen.retain(|a| only.contains(a));
        }
        if chosen.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let message = Outgoing::encode(&ToAgent::Evaluate(EvaluateRequest {
            at,
            model: model.clone(),
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
                                if r.num_examples > 0
                                    && r.loss.is_finite()
                                    && r.loss >= 0.0
                                    && (0.0..=1.0).contains(&r.accuracy)
                                {
                                    results.push((from.clone(), ClientEvaluation {
                                        num_examples: r.num_examples,
                                        loss: r.loss,
                                        accuracy: r.accuracy,
                                    }));
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
        let results: Vec<ClientEvaluation> = answers.into_iter().map(|(_, r)| r).collect();
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
        };
        self.store
            .set_round_federated(self.config.job, round, &evaluation)?;
        self.stage(round, RoundStage::Evaluated).await?;
        Ok(Some(evaluation))
    }
}

/// Success counts from agents' evaluations: each answer's accuracy (its
/// success rate) times its episodes, rounded, summed without overflow.
pub(crate) fn successes(results: &[(AgentId, ClientEvaluation)]) -> tg_types::record::Successes {
    let (mut successes, mut episodes) = (0u64, 0u64);
    for (_, r) in results {
        let won = (r.accuracy.clamp(0.0, 1.0) * r.num_examples as f64).round() as u64;
        successes = successes.saturating_add(won.min(r.num_examples));
        episodes = episodes.saturating_add(r.num_examples);
    }
    tg_types::record::Successes {
        successes,
        episodes,
    }
}
