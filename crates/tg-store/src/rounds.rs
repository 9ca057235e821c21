//! Round rows: atomic recording with participants and model, and read-back.

use rusqlite::{OptionalExtension, params};
use tg_types::JobId;
use tg_types::record::{
    FederatedEvaluation, ParticipantOutcome, ParticipantRecord, RoundRecord, RoundStatus,
};

use crate::{Result, Store, StoreError, now_ms};

impl Store {
    /// Durably records a finished round (and its model blob) atomically, and
    /// sets `round.model_sha256` to the stored blob's hash.
    pub fn record_round(
        &mut self,
        job: JobId,
        round: &mut RoundRecord,
        model_safetensors: Option<&[u8]>,
    ) -> Result<()> {
        self.record_round_with(job, round, model_safetensors, &[])
    }

    /// As [`Store::record_round`], writing agents' `reputations` (the
    /// standings the round moved) in the same transaction.
    pub fn record_round_with(
        &mut self,
        job: JobId,
        round: &mut RoundRecord,
        model_safetensors: Option<&[u8]>,
        reputations: &[tg_types::reputation::Reputation],
    ) -> Result<()> {
        let sha = match model_safetensors {
            Some(bytes) => Some(self.blobs.put(bytes)?),
            None => None,
        };
        round.model_sha256.clone_from(&sha);
        let gate = round
            .gate
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("gate verdict: {e}")))?;
        let experts = (!round.experts.is_empty())
            .then(|| serde_json::to_string(&round.experts))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("expert steps: {e}")))?;
        let screened = (!round.screened.is_empty())
            .then(|| serde_json::to_string(&round.screened))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("screened updates: {e}")))?;
        let reputation = (!round.reputation.is_empty())
            .then(|| serde_json::to_string(&round.reputation))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("reputation changes: {e}")))?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO rounds(job_id, round, status, accuracy, loss, selected, participants,
                                upload_bytes, download_bytes, duration_ms, reason, model_sha256, finished_at_ms, gate_json,
                                parent_sha256, experts_json, screened_json, reputation_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            params![
                job.to_string(),
                round.round,
                round.status.as_str(),
                round.accuracy,
                round.loss,
                round.selected,
                round.participants,
                round.upload_bytes as i64,
                round.download_bytes as i64,
                round.duration_ms as i64,
                round.reason,
                sha,
                now_ms(),
                gate,
                round.parent_sha256,
                experts,
                screened,
                reputation
            ],
        )?;
        if let Some(sha) = &sha {
            tx.execute(
                "INSERT OR IGNORE INTO models(sha256, job_id, round, bytes, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![sha, job.to_string(), round.round, model_safetensors.map_or(0, <[u8]>::len) as i64, now_ms()],
            )?;
        }
        for p in &round.participants_detail {
            tx.execute(
                "INSERT INTO participants(job_id, round, agent_id, outcome, num_examples, train_loss, upload_bytes)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    job.to_string(),
                    round.round,
                    p.agent.as_str(),
                    p.outcome.as_str(),
                    p.num_examples as i64,
                    p.train_loss,
                    p.upload_bytes as i64
                ],
            )?;
        }
        crate::reputation::write(&tx, job, reputations)?;
        tx.commit()?;
        Ok(())
    }

    /// Adds the federated evaluation of a recorded round.
    pub fn set_round_federated(
        &self,
        job: JobId,
        round: u32,
        evaluation: &FederatedEvaluation,
    ) -> Result<()> {
        // JSON has no infinity: a non-finite value would come back unreadable.
        if !(evaluation.loss.is_finite() && evaluation.accuracy.is_finite()) {
            return Err(StoreError::Corrupt(
                "refusing to record a non-finite federated evaluation".into(),
            ));
        }
        let json = serde_json::to_string(evaluation)
            .map_err(|e| StoreError::Corrupt(format!("federated evaluation: {e}")))?;
        let n = self.conn.execute(
            "UPDATE rounds SET federated_json = ?3 WHERE job_id = ?1 AND round = ?2",
            params![job.to_string(), round, json],
        )?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("round {round} of job {job}")))
        }
    }

    /// Every recorded round of a job, in order, with participants.
    pub fn rounds(&self, job_id: &str) -> Result<Vec<RoundRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT round, status, accuracy, loss, selected, participants, upload_bytes, download_bytes,
                    duration_ms, reason, model_sha256,
                    (SELECT epsilon_after FROM privacy_ledger l
                     WHERE l.job_id = rounds.job_id AND l.round = rounds.round),
                    federated_json, gate_json, parent_sha256, experts_json, screened_json, reputation_json
             FROM rounds WHERE job_id = ?1 ORDER BY round",
        )?;
        let raw = stmt
            .query_map([job_id], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get::<_, Option<f64>>(11)?,
                    r.get::<_, Option<String>>(12)?,
                    r.get::<_, Option<String>>(13)?,
                    r.get::<_, Option<String>>(14)?,
                    r.get::<_, Option<String>>(15)?,
                    r.get::<_, Option<String>>(16)?,
                    r.get::<_, Option<String>>(17)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut pstmt = self.conn.prepare(
            "SELECT agent_id, outcome, num_examples, train_loss, upload_bytes
             FROM participants WHERE job_id = ?1 AND round = ?2 ORDER BY agent_id",
        )?;
        raw.into_iter()
            .map(
                |(
                    round,
                    status,
                    accuracy,
                    loss,
                    selected,
                    participants,
                    up,
                    down,
                    dur,
                    reason,
                    sha,
                    epsilon,
                    federated,
                    gate,
                    parent,
                    experts,
                    screened,
                    reputation,
                )| {
                    let detail = pstmt
                        .query_map(params![job_id, round], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get(3)?,
                                r.get::<_, i64>(4)?,
                            ))
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?
                        .into_iter()
                        .map(|(agent, outcome, n, loss, up)| {
                            Ok(ParticipantRecord {
                                agent: parse_agent(agent)?,
                                outcome: outcome
                                    .parse::<ParticipantOutcome>()
                                    .map_err(StoreError::Corrupt)?,
                                num_examples: n as u64,
                                train_loss: loss,
                                upload_bytes: up as u64,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(RoundRecord {
                        round,
                        status: status.parse::<RoundStatus>().map_err(StoreError::Corrupt)?,
                        accuracy,
                        loss,
                        selected,
                        participants,
                        upload_bytes: up as u64,
                        download_bytes: down as u64,
                        duration_ms: dur as u64,
                        reason,
                        model_sha256: sha,
                        parent_sha256: parent,
                        participants_detail: detail,
                        epsilon,
                        // Informational: an unreadable value is left out
                        // rather than making the job's rounds unreadable.
                        federated: federated.and_then(|j| serde_json::from_str(&j).ok()),
                        gate: gate.and_then(|j| serde_json::from_str(&j).ok()),
                        experts: experts
                            .and_then(|j| serde_json::from_str(&j).ok())
                            .unwrap_or_default(),
                        screened: screened
                            .and_then(|j| serde_json::from_str(&j).ok())
                            .unwrap_or_default(),
                        reputation: reputation
                            .and_then(|j| serde_json::from_str(&j).ok())
                            .unwrap_or_default(),
                    })
                },
            )
            .collect()
    }

    /// Every model version a job committed, oldest first.
    pub fn models(&self, job_id: &str) -> Result<Vec<ModelRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT sha256, job_id, round, bytes, created_at_ms FROM models
             WHERE job_id = ?1 ORDER BY round",
        )?;
        stmt.query_map([job_id], model_row)?
            .map(|r| r.map_err(StoreError::from))
            .collect()
    }

    /// The model with this digest, if a job committed it.
    pub fn model(&self, sha256: &str) -> Result<Option<ModelRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT sha256, job_id, round, bytes, created_at_ms FROM models WHERE sha256 = ?1",
                [sha256],
                model_row,
            )
            .optional()?)
    }
}

fn parse_agent(s: String) -> Result<tg_types::AgentId> {
    tg_types::AgentId::new(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A committed model version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModelRow {
    /// SHA-256 of its safetensors bytes (its blob name).
    pub sha256: String,
    /// The job that committed it.
    pub job: String,
    /// The round that committed it.
    pub round: u32,
    /// Size in bytes.
    pub bytes: u64,
    /// When it was committed, Unix ms.
    pub created_at_ms: i64,
}

fn model_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ModelRow> {
    Ok(ModelRow {
        sha256: r.get(0)?,
        job: r.get(1)?,
        round: r.get(2)?,
        bytes: r.get::<_, i64>(3)? as u64,
        created_at_ms: r.get(4)?,
    })
}
