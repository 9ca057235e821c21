//! Connection settings and schema migrations (tracked by `PRAGMA user_version`).

use rusqlite::Connection;

use crate::{Result, StoreError};

/// Migrations in order; index + 1 is the schema version they produce.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE jobs (
    id             TEXT PRIMARY KEY,
    kind           TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    status         TEXT NOT NULL,
    reason         TEXT,
    spec_json      TEXT NOT NULL,
    summary_json   TEXT,
    owner_pid      INTEGER,
    owner_start    INTEGER
);
CREATE TABLE rounds (
    job_id         TEXT NOT NULL REFERENCES jobs(id),
    round          INTEGER NOT NULL,
    status         TEXT NOT NULL,
    accuracy       REAL,
    loss           REAL,
    selected       INTEGER NOT NULL,
    participants   INTEGER NOT NULL,
    upload_bytes   INTEGER NOT NULL,
    download_bytes INTEGER NOT NULL,
    duration_ms    INTEGER NOT NULL,
    reason         TEXT,
    model_sha256   TEXT,
    finished_at_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, round)
);
CREATE TABLE participants (
    job_id       TEXT NOT NULL,
    round        INTEGER NOT NULL,
    agent_id     TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    num_examples INTEGER NOT NULL,
    train_loss   REAL,
    upload_bytes INTEGER NOT NULL,
    PRIMARY KEY (job_id, round, agent_id),
    FOREIGN KEY (job_id, round) REFERENCES rounds(job_id, round)
);
CREATE TABLE models (
    sha256        TEXT PRIMARY KEY,
    job_id        TEXT NOT NULL REFERENCES jobs(id),
    round         INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);
",
    r"
CREATE TABLE privacy_ledger (
    job_id           TEXT NOT NULL REFERENCES jobs(id),
    round            INTEGER NOT NULL,
    mechanism        TEXT NOT NULL,
    sampling_rate    REAL NOT NULL,
    noise_multiplier REAL NOT NULL,
    steps            INTEGER NOT NULL,
    epsilon_after    REAL NOT NULL,
    delta            REAL NOT NULL,
    accountant       TEXT NOT NULL,
    recorded_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (job_id, round)
);
CREATE TRIGGER privacy_ledger_append_only_update BEFORE UPDATE ON privacy_ledger
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER privacy_ledger_append_only_delete BEFORE DELETE ON privacy_ledger
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
",
    r"
CREATE TABLE round_stages (
    job_id       TEXT NOT NULL REFERENCES jobs(id),
    round        INTEGER NOT NULL,
    stage        TEXT NOT NULL,
    detail       TEXT,
    at_ms        INTEGER NOT NULL
);
CREATE INDEX round_stages_by_job ON round_stages(job_id, round);
CREATE TABLE enrollment_tokens (
    token_sha256  TEXT PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_by       TEXT,
    used_at_ms    INTEGER
);
CREATE TABLE admitted_peers (
    peer_id        TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    via            TEXT NOT NULL,
    admitted_at_ms INTEGER NOT NULL
);
",
    // 4: API bearer tokens, stored as SHA-256 digests with a role.
    "
CREATE TABLE api_tokens (
    id              TEXT PRIMARY KEY,
    token_sha256    TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    label           TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER,
    revoked_at_ms   INTEGER,
    last_used_at_ms INTEGER
);
",
    // 5: operator settings, one validated JSON document per section.
    "
CREATE TABLE settings (
    section       TEXT PRIMARY KEY,
    value_json    TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    updated_by    TEXT NOT NULL
);
",
    // 6: each distributed-DP ledger row keeps the release it charged, so its
    // ε can be recomputed from the row alone.
    "
ALTER TABLE privacy_ledger ADD COLUMN release_json TEXT;
",
    // 7: the federated evaluation of a committed round (JSON), when the job
    // schedules one.
    "
ALTER TABLE rounds ADD COLUMN federated_json TEXT;
",
    // 8: the rollout gate's verdict on a round's candidate (JSON), for jobs
    // with a gate: what was compared, the interval and the decision.
    "
ALTER TABLE rounds ADD COLUMN gate_json TEXT;
",
    // 9: the model registry: each committed model's parent version, and
    // operators' rollbacks of a job's head (append-only, like the ledger);
    // what an expert-wise round did to each expert (JSON).
    "
ALTER TABLE rounds ADD COLUMN parent_sha256 TEXT;
ALTER TABLE rounds ADD COLUMN experts_json TEXT;
CREATE TABLE model_rollbacks (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    sha256      TEXT NOT NULL,
    from_sha256 TEXT,
    after_round INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    actor       TEXT NOT NULL,
    at_ms       INTEGER NOT NULL
);
CREATE INDEX model_rollbacks_by_job ON model_rollbacks(job_id, seq);
CREATE TRIGGER model_rollbacks_append_only_update BEFORE UPDATE ON model_rollbacks
BEGIN SELECT RAISE(ABORT, 'model rollbacks are append-only'); END;
CREATE TRIGGER model_rollbacks_append_only_delete BEFORE DELETE ON model_rollbacks
BEGIN SELECT RAISE(ABORT, 'model rollbacks are append-only'); END;
",
    // 10: how a job's robust aggregator judged each update of a round
    // (JSON: agent, score, admitted).
    "
ALTER TABLE rounds ADD COLUMN screened_json TEXT;
",
    // 11: agents' reputation per job (JSON, see tg_types::reputation), and
    // the changes of standing each round caused (JSON).
    "
ALTER TABLE rounds ADD COLUMN reputation_json TEXT;
CREATE TABLE reputation (
    job_id        TEXT NOT NULL REFERENCES jobs(id),
    agent_id      TEXT NOT NULL,
    value_json    TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, agent_id)
);
",
];

/// Sets durability pragmas and applies pending migrations.
pub(crate) fn configure_and_migrate(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a committed round survives power loss, not only a process crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = MIGRATIONS.len() as i64;
    if version > latest {
        return Err(StoreError::Corrupt(format!(
            "database schema version {version} is newer than this build understands ({latest}); upgrade tensorguard"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
