//! Operator settings (job defaults, key-management provider), one JSON
//! document per section.
//!
//! Design decision: the store keeps whole validated documents, not loose
//! key/value pairs, so a section is always read back exactly as it was
//! accepted; validation belongs to the API that knows each section's shape.
//! Every write records who made it, and the caller audits it.

use rusqlite::{OptionalExtension, params};

use crate::{Result, Store, StoreError, now_ms};

/// One stored settings section.
#[derive(Clone, Debug, PartialEq)]
pub struct SettingsSection {
    /// Section name, e.g. `job_defaults`.
    pub section: String,
    /// The document.
    pub value: serde_json::Value,
    /// Last change, Unix ms.
    pub updated_at_ms: i64,
    /// Who changed it (an API token id or `cli`).
    pub updated_by: String,
}

impl Store {
    /// Replaces `section` with `value`.
    pub fn put_settings(&self, section: &str, value: &serde_json::Value, by: &str) -> Result<()> {
        let text = serde_json::to_string(value)
            .map_err(|e| StoreError::Corrupt(format!("settings not serializable: {e}")))?;
        self.conn.execute(
            "INSERT INTO settings (section, value_json, updated_at_ms, updated_by) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(section) DO UPDATE SET value_json = ?2, updated_at_ms = ?3, updated_by = ?4",
            params![section, text, now_ms(), by],
        )?;
        Ok(())
    }

    /// The stored `section`, if it was ever set.
    pub fn settings(&self, section: &str) -> Result<Option<SettingsSection>> {
        let row = self
            .conn
            .query_row(
                "SELECT value_json, updated_at_ms, updated_by FROM settings WHERE section = ?1",
                params![section],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(text, at, by)| {
            let value = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("settings `{section}`: {e}")))?;
            Ok(SettingsSection {
                section: section.to_owned(),
                value,
                updated_at_ms: at,
                updated_by: by,
            })
        })
        .transpose()
    }
}
