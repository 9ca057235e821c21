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
use tg_types::Parameters;
use tg_types::record::{FederatedEvaluation, RoundStage};

use crate::{Coordinator, Incoming, Outgoing, Result, Transport, TransportEvent};

impl<T: Transport> Coordinator<'_, T> {
    /// Asks the strategy's choice of agents to evaluate `global`, waits for
    /// their answers until the stage deadline, records and returns the
    /// combined evaluation (None when nobody usable answered).
    pub(crate) async fn evaluate_federated(
        &mut self,
        round: u32,
        global: &Parameters,
    ) -> Result<Option<FederatedEvaluation>> {
        let at = RoundRef {
            job: self.config.job,
            round,
        };
        let available = self.transport.connected();
        let chosen = self.strategy.configure_evaluate(round, &available);
        if chosen.is_empty() {
            return Ok(None);
        }
        let message = Outgoing::encode(&ToAgent::Evaluate(EvaluateRequest {
            at,
            model: global.clone(),
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
                                    results.push(ClientEvaluation {
                                        num_examples: r.num_examples,
                                        loss: r.loss,
                                        accuracy: r.accuracy,
                                    });
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
        let answered = results.len() as u32;
        let Some(c) = self
            .strategy
            .aggregate_evaluate(&results)
            .filter(|c| c.loss.is_finite() && c.accuracy.is_finite())
        else {
            return Ok(None);
        };
        let evaluation = FederatedEvaluation {
            asked: chosen.len() as u32,
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
