/**
 * The SQLite schema of the monitor's store, versioned with PRAGMA user_version. Each entry of
 * MIGRATIONS takes the database from version i to i+1 and runs in one transaction with the
 * user_version bump; never edit a released step, append one. `application_id` marks the file as
 * pmi's, so the store refuses to write its tables into someone else's SQLite database.
 */

/** 'pmi1' as a big-endian 32-bit integer. */
export const PMI_APPLICATION_ID = 0x706d6931;

export const MIGRATIONS: readonly string[] = [
  // 0 → 1
  `
  CREATE TABLE alerts (
    id                TEXT PRIMARY KEY,
    time              TEXT NOT NULL,
    target            TEXT NOT NULL,
    "check"           TEXT NOT NULL,
    severity          TEXT NOT NULL,
    address           TEXT,
    symbol            TEXT,
    old               TEXT,
    new               TEXT,
    evidence          TEXT NOT NULL,
    "key"             TEXT NOT NULL,
    detected_after_ms REAL,
    acknowledged      INTEGER NOT NULL DEFAULT 0,
    acknowledged_at   TEXT,
    acknowledged_by   TEXT
  );
  CREATE INDEX alerts_time ON alerts (time);
  CREATE INDEX alerts_target_time ON alerts (target, time);
  CREATE INDEX alerts_unacknowledged ON alerts (acknowledged, time);

  CREATE TABLE events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    time   TEXT NOT NULL,
    target TEXT NOT NULL,
    type   TEXT NOT NULL,
    detail TEXT NOT NULL,
    data   TEXT CHECK (data IS NULL OR json_valid(data))
  );
  CREATE INDEX events_target_time ON events (target, time);

  CREATE TABLE baselines (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    target         TEXT NOT NULL,
    created        TEXT NOT NULL,
    kernel_release TEXT,
    kaslr_slide    TEXT,
    boot_id        TEXT,
    json           TEXT NOT NULL CHECK (json_valid(json))
  );
  CREATE INDEX baselines_target ON baselines (target, id);

  CREATE TABLE target_states (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    time   TEXT NOT NULL,
    state  TEXT NOT NULL,
    detail TEXT
  );
  CREATE INDEX target_states_target ON target_states (target, id);
  `,
];

/** The version a database has after all migrations. */
export const SCHEMA_VERSION = MIGRATIONS.length;
