//! Where a job (re)starts and which model each round trains from: the
//! resume after a crash, and the model registry's head (an operator's
//! rollback, adopted before a round and guarded at its commit).

use tg_store::{NewJob, StoreError};
use tg_types::Parameters;
use tg_types::record::RoundStage;

use crate::{Coordinator, Result, Transport, round};

/// Where a job (re)starts.
pub(crate) struct ResumePoint {
    pub(crate) next_round: u32,
    pub(crate) model: Parameters,
    pub(crate) charged: u64,
    pub(crate) epsilon: f64,
}

impl<T: Transport> Coordinator<'_, T> {
    /// A new job starts at round 1 from `initial`. A job already in the
    /// store (a coordinator restarted after a crash) resumes: from its last
    /// committed model, with the ledger's spending, after recording the round
    /// that was in flight as failed. A round in flight is never completed
    /// from a half-remembered state: its masks and updates died with the
    /// process, so it is restarted cleanly as the next round. Its ledger
    /// entry stays (the ledger only ever over-counts).
    pub(crate) fn resume_point(&mut self, initial: Parameters) -> Result<ResumePoint> {
        let job = self.config.job;
        let id = job.to_string();
        match self.store.find_job(&id) {
            Err(StoreError::NotFound(_)) => {
                self.store.create_job(&NewJob {
                    id: job,
                    kind: &self.config.kind,
                    spec: &self.config.spec_json,
                })?;
                return Ok(ResumePoint {
                    next_round: 1,
                    model: initial,
                    charged: 0,
                    epsilon: 0.0,
                });
            }
            Err(e) => return Err(e.into()),
            Ok(_) => self.store.reclaim_job(job)?,
        }
        let recorded = self
            .store
            .rounds(&id)?
            .iter()
            .map(|r| r.round)
            .max()
            .unwrap_or(0);
        let ledger = self.store.ledger(&id)?;
        let in_flight = self.store.last_stage(job)?.filter(|s| s.round > recorded);
        let charged_ahead = ledger
            .iter()
            .map(|e| e.round)
            .max()
            .filter(|&r| r > recorded);
        let interrupted = match (in_flight.as_ref().map(|s| s.round), charged_ahead) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let mut next_round = recorded + 1;
        if let Some(round) = interrupted {
            let stage =
                in_flight.map_or_else(|| "before selection".to_owned(), |s| s.stage.to_string());
            let mut record = round::new_record(round);
            record.reason = Some(format!(
                "interrupted: the coordinator stopped during this round (last stage: {stage}); \
                 the job resumed with the next round"
            ));
            record.epsilon = ledger
                .iter()
                .find(|e| e.round == round)
                .map(|e| e.epsilon_after);
            self.store.record_round(job, &mut record, None)?;
            self.store
                .record_stage(job, round, RoundStage::Failed, Some("interrupted"))?;
            next_round = round + 1;
        }
        // The head: the last committed model, or the version an operator
        // rolled back to.
        let model = match self.store.model_head(&id)? {
            Some(head) => {
                let model = Parameters::from_safetensors(&self.store.blobs().get(&head.sha256)?)?;
                self.base = Some(head.sha256);
                model
            }
            None => initial,
        };
        tracing::info!(job = %job, next_round, charged = ledger.len(), "resuming job");
        Ok(ResumePoint {
            next_round,
            model,
            charged: ledger.len() as u64,
            epsilon: ledger.last().map_or(0.0, |e| e.epsilon_after),
        })
    }
    /// The rolled-back head, when an operator moved the job's head away
    /// from the model the coordinator holds.
    pub(crate) fn adopt_rollback(&mut self) -> Result<Option<Parameters>> {
        let job = self.config.job.to_string();
        self.rollback_seq = self.store.last_rollback_seq(&job)?;
        let Some(head) = self.store.model_head(&job)? else {
            return Ok(None);
        };
        if self.base.as_deref() == Some(head.sha256.as_str()) {
            return Ok(None);
        }
        let model = Parameters::from_safetensors(&self.store.blobs().get(&head.sha256)?)?;
        tracing::warn!(
            job = %self.config.job,
            from = self.base.as_deref().unwrap_or("initial"),
            to = %head.sha256,
            "the job's head was rolled back; the next round starts from it"
        );
        self.base = Some(head.sha256);
        Ok(Some(model))
    }

    /// Whether an operator rolled the head back while this round ran (its
    /// candidate was trained from the model the rollback replaced).
    /// Any rollback since the round started counts, even one undone by a
    /// second (the head may be this round's base again, but a rollback made
    /// after the round was staged would keep it there over this candidate).
    pub(crate) fn rolled_back_during_round(&self) -> Result<Option<String>> {
        let job = self.config.job.to_string();
        if self.store.last_rollback_seq(&job)? == self.rollback_seq {
            return Ok(None);
        }
        Ok(Some(
            self.store
                .model_head(&job)?
                .map_or_else(|| "(initial)".to_owned(), |h| h.sha256),
        ))
    }
}
