//! The privacy ledger: append-only, one row per round, written before the
//! round's noised results exist.
//!
//! Design decision: the table refuses UPDATE and DELETE with triggers, and
//! an entry is committed (synchronous=FULL) before the caller may start the
//! round, so after any crash the ledger holds *at least* what was spent.

use rusqlite::params;
use tg_privacy::{AccountantKind, Delta, GaussianSteps, NoiseMultiplier, SamplingRate};
use tg_types::JobId;
use tg_types::privacy::LedgerEntry;

use crate::{Result, Store, StoreError, now_ms};

impl Store {
    /// Appends a round's entry durably. Fails if the round already has one.
    pub fn append_ledger(&self, job: JobId, entry: &LedgerEntry) -> Result<()> {
        let release = entry
            .release
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("privacy ledger release: {e}")))?;
        self.conn.execute(
            "INSERT INTO privacy_ledger(job_id, round, mechanism, sampling_rate, noise_multiplier, steps,
                                        epsilon_after, delta, accountant, recorded_at_ms, release_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                job.to_string(),
                entry.round,
                entry.mechanism,
                entry.spent.sampling_rate.get(),
                entry.spent.noise_multiplier.get(),
                entry.spent.steps as i64,
                entry.epsilon_after,
                entry.delta.get(),
                entry.accountant.as_str(),
                now_ms(),
                release
            ],
        )?;
        Ok(())
    }

    /// A job's ledger in round order.
    pub fn ledger(&self, job_id: &str) -> Result<Vec<LedgerEntry>> {
        let mut stmt = self.conn.prepare(
            "SELECT round, mechanism, sampling_rate, noise_multiplier, steps, epsilon_after, delta, accountant,
                    release_json
             FROM privacy_ledger WHERE job_id = ?1 ORDER BY round",
        )?;
        let rows = stmt
            .query_map([job_id], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, f64>(2)?,
                    r.get::<_, f64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, f64>(5)?,
                    r.get::<_, f64>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<String>>(8)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let corrupt =
            |e: tg_privacy::PrivacyError| StoreError::Corrupt(format!("privacy ledger: {e}"));
        rows.into_iter()
            .map(
                |(round, mechanism, q, s, steps, eps, delta, accountant, release)| {
                    Ok(LedgerEntry {
                        round,
                        mechanism,
                        spent: GaussianSteps {
                            sampling_rate: SamplingRate::new(q).map_err(corrupt)?,
                            noise_multiplier: NoiseMultiplier::new(s).map_err(corrupt)?,
                            steps: u64::try_from(steps).map_err(|_| {
                                StoreError::Corrupt("privacy ledger: negative steps".into())
                            })?,
                        },
                        epsilon_after: eps,
                        delta: Delta::new(delta).map_err(corrupt)?,
                        accountant: accountant
                            .parse::<AccountantKind>()
                            .map_err(|e| StoreError::Corrupt(format!("privacy ledger: {e}")))?,
                        release: release
                            .map(|j| serde_json::from_str(&j))
                            .transpose()
                            .map_err(|e| {
                                StoreError::Corrupt(format!("privacy ledger release: {e}"))
                            })?,
                    })
                },
            )
            .collect()
    }
}
