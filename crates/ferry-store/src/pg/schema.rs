//! The PostgreSQL control-store schema, one entry per version. Applied in order, each in the
//! start-up transaction, never edited once released: a change is a new version.
//!
//! `ferry_tenant_phases` has no index on the columns a phase change writes (phase, version,
//! changed_at_version, updated_at), and leaves 20% of each page free, so PostgreSQL can apply
//! a change as a heap-only-tuple update without touching any index: about twice as fast for
//! a large rollout. Routers find what changed through the audit log's `change_version`
//! index instead, which is append-only and cheap to maintain.

pub(crate) const STEPS: &[&str] = &[V1, V2, V3, V4];

const V1: &str = r#"
CREATE TABLE ferry_change_counter (
    id int PRIMARY KEY CHECK (id = 1),
    version bigint NOT NULL
);
INSERT INTO ferry_change_counter (id, version) VALUES (1, 0);

CREATE TABLE ferry_migrations (
    migration_id text PRIMARY KEY,
    kind text NOT NULL,
    description text NOT NULL,
    config text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ferry_tenant_phases (
    migration_id text NOT NULL REFERENCES ferry_migrations (migration_id),
    tenant_id text NOT NULL,
    phase text NOT NULL CHECK (phase IN ('legacy', 'dual_write', 'shadow', 'target_primary', 'target_only', 'complete')),
    paused boolean NOT NULL DEFAULT false,
    version bigint NOT NULL DEFAULT 0,
    changed_at_version bigint NOT NULL DEFAULT 0,
    row_count bigint NOT NULL DEFAULT 0,
    cohort_bucket bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, tenant_id)
) WITH (fillfactor = 80);
CREATE INDEX ferry_tenant_phases_bucket ON ferry_tenant_phases (migration_id, cohort_bucket);
CREATE INDEX ferry_tenant_phases_size ON ferry_tenant_phases (migration_id, row_count, tenant_id);

CREATE TABLE ferry_audit_log (
    seq bigserial PRIMARY KEY,
    migration_id text NOT NULL,
    tenant_id text NOT NULL,
    action text NOT NULL,
    from_phase text NOT NULL,
    from_paused boolean NOT NULL,
    to_phase text NOT NULL,
    to_paused boolean NOT NULL,
    actor text NOT NULL,
    reason text NOT NULL,
    forced_guards text NOT NULL,
    change_version bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ferry_audit_log_tenant ON ferry_audit_log (migration_id, tenant_id, seq);
CREATE INDEX ferry_audit_log_change ON ferry_audit_log (change_version);

CREATE FUNCTION ferry_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ferry_audit_log is append-only';
END
$$;
CREATE TRIGGER ferry_audit_log_append_only BEFORE UPDATE OR DELETE ON ferry_audit_log
    FOR EACH ROW EXECUTE FUNCTION ferry_audit_log_append_only();

CREATE TABLE ferry_routers (
    router_id text PRIMARY KEY,
    description text NOT NULL,
    seen_version bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ferry_backfill (
    migration_id text NOT NULL,
    tenant_id text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('forward', 'reverse')),
    rows_done bigint NOT NULL,
    rows_total bigint NOT NULL,
    complete boolean NOT NULL,
    last_key text,
    batch_size bigint NOT NULL DEFAULT 0,
    rows_per_s double precision NOT NULL DEFAULT 0,
    throttled text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, tenant_id, direction)
);

CREATE TABLE ferry_copy_controls (
    migration_id text NOT NULL,
    scope text NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    cancelled boolean NOT NULL DEFAULT false,
    rate_limit bigint,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, scope)
);

CREATE TABLE ferry_mismatches (
    id bigserial PRIMARY KEY,
    migration_id text NOT NULL,
    tenant_id text NOT NULL,
    entity_key text NOT NULL,
    detail text NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE INDEX ferry_mismatches_open ON ferry_mismatches (migration_id, tenant_id) WHERE resolved_at IS NULL;

CREATE TABLE ferry_update_buffer (
    seq bigserial PRIMARY KEY,
    migration_id text NOT NULL,
    tenant_id text NOT NULL,
    entity_key text NOT NULL,
    operation text NOT NULL,
    payload text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead', 'applied')),
    attempts int NOT NULL DEFAULT 0,
    last_error text,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ferry_update_buffer_open ON ferry_update_buffer (migration_id, tenant_id, seq) WHERE state <> 'applied';
"#;

/// The cold tier's manifest and archive watermarks (tiering migrations).
const V2: &str = r#"
CREATE TABLE ferry_segments (
    segment_id bigserial PRIMARY KEY,
    migration_id text NOT NULL,
    tenant_id text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'live', 'retired')),
    path text NOT NULL DEFAULT '',
    row_count bigint NOT NULL DEFAULT 0,
    min_key text NOT NULL DEFAULT '',
    max_key text NOT NULL DEFAULT '',
    checksum text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz
);
CREATE INDEX ferry_segments_tenant ON ferry_segments (migration_id, tenant_id, state);

CREATE TABLE ferry_tier_watermarks (
    migration_id text NOT NULL,
    tenant_id text NOT NULL,
    archived_through text NOT NULL,
    PRIMARY KEY (migration_id, tenant_id)
);
"#;

/// The admin API's tokens (hashes only), the operator log, and routers' route-decision counts.
const V3: &str = r#"
CREATE TABLE ferry_api_tokens (
    name text PRIMARY KEY,
    scope text NOT NULL CHECK (scope IN ('read', 'operator')),
    token_sha256 text NOT NULL UNIQUE,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

CREATE TABLE ferry_operator_log (
    seq bigserial PRIMARY KEY,
    actor text NOT NULL,
    operation text NOT NULL,
    target text NOT NULL,
    outcome text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER ferry_operator_log_append_only BEFORE UPDATE OR DELETE ON ferry_operator_log
    FOR EACH ROW EXECUTE FUNCTION ferry_audit_log_append_only();

CREATE TABLE ferry_route_counts (
    router_id text NOT NULL,
    migration_id text NOT NULL,
    operation text NOT NULL,
    phase text NOT NULL,
    path text NOT NULL,
    reason text NOT NULL,
    count bigint NOT NULL,
    PRIMARY KEY (router_id, migration_id, operation, phase, path, reason)
);
"#;

/// Copy epochs: each tenant's, bumped by the changes that make copy progress stale, and the
/// one each progress row was written in. The append-only refusal names the table it guards
/// (the operator log's trigger used to say "ferry_audit_log").
const V4: &str = r#"
ALTER TABLE ferry_tenant_phases ADD COLUMN copy_epoch bigint NOT NULL DEFAULT 0;
ALTER TABLE ferry_backfill ADD COLUMN epoch bigint NOT NULL DEFAULT 0;

CREATE FUNCTION ferry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END
$$;
DROP TRIGGER ferry_operator_log_append_only ON ferry_operator_log;
CREATE TRIGGER ferry_operator_log_append_only BEFORE UPDATE OR DELETE ON ferry_operator_log
    FOR EACH ROW EXECUTE FUNCTION ferry_append_only();
"#;
