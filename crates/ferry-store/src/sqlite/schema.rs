//! The SQLite control-store schema, one entry per version (see `pg/schema.rs`; the two are
//! kept equivalent, with timestamps as Unix milliseconds here).

pub(crate) const STEPS: &[&str] = &[V1, V2, V3, V4];

const V1: &str = r#"
CREATE TABLE ferry_change_counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO ferry_change_counter (id, version) VALUES (1, 0);

CREATE TABLE ferry_migrations (
    migration_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    description TEXT NOT NULL,
    config TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE ferry_tenant_phases (
    migration_id TEXT NOT NULL REFERENCES ferry_migrations (migration_id),
    tenant_id TEXT NOT NULL,
    phase TEXT NOT NULL CHECK (phase IN ('legacy', 'dual_write', 'shadow', 'target_primary', 'target_only', 'complete')),
    paused INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    changed_at_version INTEGER NOT NULL DEFAULT 0,
    row_count INTEGER NOT NULL DEFAULT 0,
    cohort_bucket INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (migration_id, tenant_id)
) WITHOUT ROWID;
CREATE INDEX ferry_tenant_phases_bucket ON ferry_tenant_phases (migration_id, cohort_bucket);
CREATE INDEX ferry_tenant_phases_size ON ferry_tenant_phases (migration_id, row_count, tenant_id);

CREATE TABLE ferry_audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    action TEXT NOT NULL,
    from_phase TEXT NOT NULL,
    from_paused INTEGER NOT NULL,
    to_phase TEXT NOT NULL,
    to_paused INTEGER NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    forced_guards TEXT NOT NULL,
    change_version INTEGER NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX ferry_audit_log_tenant ON ferry_audit_log (migration_id, tenant_id, seq);
CREATE INDEX ferry_audit_log_change ON ferry_audit_log (change_version);
CREATE TRIGGER ferry_audit_log_no_update BEFORE UPDATE ON ferry_audit_log
BEGIN SELECT RAISE(ABORT, 'ferry_audit_log is append-only'); END;
CREATE TRIGGER ferry_audit_log_no_delete BEFORE DELETE ON ferry_audit_log
BEGIN SELECT RAISE(ABORT, 'ferry_audit_log is append-only'); END;

CREATE TABLE ferry_routers (
    router_id TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    seen_version INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

CREATE TABLE ferry_backfill (
    migration_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('forward', 'reverse')),
    rows_done INTEGER NOT NULL,
    rows_total INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    last_key TEXT,
    batch_size INTEGER NOT NULL DEFAULT 0,
    rows_per_s REAL NOT NULL DEFAULT 0,
    throttled TEXT,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (migration_id, tenant_id, direction)
);

CREATE TABLE ferry_copy_controls (
    migration_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    rate_limit INTEGER,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (migration_id, scope)
);

CREATE TABLE ferry_mismatches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    detail TEXT NOT NULL,
    detected_at INTEGER NOT NULL,
    resolved_at INTEGER
);
CREATE INDEX ferry_mismatches_open ON ferry_mismatches (migration_id, tenant_id) WHERE resolved_at IS NULL;

CREATE TABLE ferry_update_buffer (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    operation TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead', 'applied')),
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    enqueued_at INTEGER NOT NULL
);
CREATE INDEX ferry_update_buffer_open ON ferry_update_buffer (migration_id, tenant_id, seq) WHERE state <> 'applied';
"#;

/// The cold tier's manifest and archive watermarks (tiering migrations).
const V2: &str = r#"
CREATE TABLE ferry_segments (
    segment_id INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'live', 'retired')),
    path TEXT NOT NULL DEFAULT '',
    row_count INTEGER NOT NULL DEFAULT 0,
    min_key TEXT NOT NULL DEFAULT '',
    max_key TEXT NOT NULL DEFAULT '',
    checksum TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    retired_at INTEGER
);
CREATE INDEX ferry_segments_tenant ON ferry_segments (migration_id, tenant_id, state);

CREATE TABLE ferry_tier_watermarks (
    migration_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    archived_through TEXT NOT NULL,
    PRIMARY KEY (migration_id, tenant_id)
);
"#;

const V3: &str = r#"
CREATE TABLE ferry_api_tokens (
    name TEXT PRIMARY KEY,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'operator')),
    token_sha256 TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE ferry_operator_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    actor TEXT NOT NULL,
    operation TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE TRIGGER ferry_operator_log_no_update BEFORE UPDATE ON ferry_operator_log
BEGIN SELECT RAISE(ABORT, 'ferry_operator_log is append-only'); END;
CREATE TRIGGER ferry_operator_log_no_delete BEFORE DELETE ON ferry_operator_log
BEGIN SELECT RAISE(ABORT, 'ferry_operator_log is append-only'); END;

CREATE TABLE ferry_route_counts (
    router_id TEXT NOT NULL,
    migration_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    phase TEXT NOT NULL,
    path TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (router_id, migration_id, operation, phase, path, reason)
) WITHOUT ROWID;
"#;

/// Copy epochs: each tenant's, bumped by the changes that make copy progress stale, and the
/// one each progress row was written in.
const V4: &str = r#"
ALTER TABLE ferry_tenant_phases ADD COLUMN copy_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ferry_backfill ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
"#;
