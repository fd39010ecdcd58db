//! Decoding rows into domain types. A value that does not decode means the store was written by
//! something else (or a newer binary slipped past the schema check): a [`StoreError::Corrupt`],
//! never a panic.

use chrono::{DateTime, Utc};
use ferry_domain::{Action, Guard, MigrationId, Phase, RouterId, TenantId, TenantPhase};

use crate::error::{Result, StoreError};
use crate::model::{
    AuditEntry, Migration, MigrationKind, OperationRecord, RouteCount, RouterRecord, TenantRecord,
    TokenRecord, TokenScope,
};

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt { what: what.into() }
}

pub(crate) fn migration_id(s: String) -> Result<MigrationId> {
    MigrationId::new(s).map_err(|e| corrupt(e.to_string()))
}

pub(crate) fn tenant_id(s: String) -> Result<TenantId> {
    TenantId::new(s).map_err(|e| corrupt(e.to_string()))
}

pub(crate) fn router_id(s: String) -> Result<RouterId> {
    RouterId::new(s).map_err(|e| corrupt(e.to_string()))
}

pub(crate) fn phase(s: &str) -> Result<Phase> {
    s.parse()
        .map_err(|e: ferry_domain::ParsePhaseError| corrupt(e.to_string()))
}

fn action(s: &str) -> Result<Action> {
    Action::parse(s).ok_or_else(|| corrupt(format!("unknown action {s:?}")))
}

fn kind(s: &str) -> Result<MigrationKind> {
    MigrationKind::parse(s).ok_or_else(|| corrupt(format!("unknown migration kind {s:?}")))
}

fn u64_of(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(format!("negative {what}: {v}")))
}

/// Guards overridden with `--force`, stored as a comma-separated list of guard names.
pub(crate) fn guards_to_text(guards: &[Guard]) -> String {
    guards
        .iter()
        .map(|g| g.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn guards_from_text(s: &str) -> Result<Vec<Guard>> {
    s.split(',')
        .filter(|part| !part.is_empty())
        .map(|part| Guard::parse(part).ok_or_else(|| corrupt(format!("unknown guard {part:?}"))))
        .collect()
}

/// SQLite keeps timestamps as Unix milliseconds.
pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(format!("timestamp {ms} ms")))
}

pub(crate) fn to_millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// `(migration_id, tenant_id, phase, paused, version, changed_at_version, row_count,
/// cohort_bucket, copy_epoch, updated_at)`, the column order every tenant query selects.
pub(crate) type TenantRow<T> = (String, String, String, bool, i64, i64, i64, i64, i64, T);

/// The columns of [`TenantRow`], as a literal for `concat!`.
macro_rules! tenant_columns {
    () => {
        "migration_id, tenant_id, phase, paused, version, changed_at_version, row_count, cohort_bucket, copy_epoch, updated_at"
    };
}
pub(crate) use tenant_columns;

pub(crate) fn tenant_record<T>(
    row: TenantRow<T>,
    at: impl FnOnce(T) -> Result<DateTime<Utc>>,
) -> Result<TenantRecord> {
    let (migration, tenant, phase_name, paused, version, changed, rows, bucket, epoch, updated) =
        row;
    Ok(TenantRecord {
        migration: migration_id(migration)?,
        tenant: tenant_id(tenant)?,
        state: TenantPhase {
            phase: phase(&phase_name)?,
            paused,
            version,
        },
        changed_at_version: changed,
        rows: u64_of(rows, "row count")?,
        cohort_bucket: u32::try_from(bucket)
            .map_err(|_| corrupt(format!("cohort bucket {bucket}")))?,
        copy_epoch: epoch,
        updated_at: at(updated)?,
    })
}

/// `(migration_id, kind, description, config, created_by, created_at)`.
pub(crate) type MigrationRow<T> = (String, String, String, String, String, T);

pub(crate) fn migration<T>(
    row: MigrationRow<T>,
    at: impl FnOnce(T) -> Result<DateTime<Utc>>,
) -> Result<Migration> {
    let (id, kind_name, description, config, created_by, created_at) = row;
    Ok(Migration {
        id: migration_id(id)?,
        kind: kind(&kind_name)?,
        description,
        config: serde_json::from_str(&config)
            .map_err(|e| corrupt(format!("migration config is not JSON: {e}")))?,
        created_by,
        created_at: at(created_at)?,
    })
}

/// `(seq, migration_id, tenant_id, action, from_phase, from_paused, to_phase, to_paused,
/// actor, reason, forced_guards, change_version, at)`.
pub(crate) type AuditRow<T> = (
    i64,
    String,
    String,
    String,
    String,
    bool,
    String,
    bool,
    String,
    String,
    String,
    i64,
    T,
);

/// The columns of [`AuditRow`], as a literal for `concat!`.
macro_rules! audit_columns {
    () => {
        "seq, migration_id, tenant_id, action, from_phase, from_paused, to_phase, to_paused, actor, reason, forced_guards, change_version, at"
    };
}
pub(crate) use audit_columns;

pub(crate) fn audit_entry<T>(
    row: AuditRow<T>,
    at: impl FnOnce(T) -> Result<DateTime<Utc>>,
) -> Result<AuditEntry> {
    let (seq, m, t, a, fp, fpaused, tp, tpaused, actor, reason, forced, change_version, when) = row;
    Ok(AuditEntry {
        seq,
        migration: migration_id(m)?,
        tenant: tenant_id(t)?,
        action: action(&a)?,
        from_phase: phase(&fp)?,
        from_paused: fpaused,
        to_phase: phase(&tp)?,
        to_paused: tpaused,
        actor,
        reason,
        forced_guards: guards_from_text(&forced)?,
        change_version,
        at: at(when)?,
    })
}

/// `(router_id, description, seen_version, started_at, heartbeat_at)`.
pub(crate) type RouterRow<T> = (String, String, i64, T, T);

pub(crate) fn router<T>(
    row: RouterRow<T>,
    live: bool,
    at: impl Fn(T) -> Result<DateTime<Utc>>,
) -> Result<RouterRecord> {
    let (id, description, seen_version, started, beat) = row;
    Ok(RouterRecord {
        id: router_id(id)?,
        description,
        seen_version,
        started_at: at(started)?,
        heartbeat_at: at(beat)?,
        live,
    })
}

pub(crate) fn count(v: i64) -> Result<u64> {
    u64_of(v, "count")
}

/// `segment_id, tenant_id, path, row_count, min_key, max_key, checksum`, in this order.
pub(crate) type SegmentRow = (i64, String, String, i64, String, String, String);

pub(crate) const SEGMENT_COLUMNS: &str =
    "segment_id, tenant_id, path, row_count, min_key, max_key, checksum";

pub(crate) fn segment(row: SegmentRow) -> crate::Result<crate::SegmentRecord> {
    let (id, tenant, path, rows, min_key, max_key, checksum) = row;
    Ok(crate::SegmentRecord {
        id,
        tenant: ferry_domain::TenantId::new(tenant).map_err(|e| crate::StoreError::Corrupt {
            what: format!("segment {id}: {e}"),
        })?,
        path,
        rows: u64::try_from(rows).unwrap_or(0),
        min_key,
        max_key,
        checksum,
    })
}

/// `seq, tenant_id, entity_key, operation, payload, state, attempts, last_error, enqueued_at`
/// ([`UPDATE_COLUMNS`]), the enqueue time in the store's own type.
pub(crate) type UpdateRow<T> = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i32,
    Option<String>,
    T,
);

pub(crate) const UPDATE_COLUMNS: &str =
    "seq, tenant_id, entity_key, operation, payload, state, attempts, last_error, enqueued_at";

pub(crate) fn update<T>(
    row: UpdateRow<T>,
    at: impl FnOnce(T) -> Result<DateTime<Utc>>,
) -> crate::Result<crate::BufferedUpdate> {
    let (seq, tenant, key, operation, payload, state, attempts, last_error, enqueued) = row;
    let enqueued_at = at(enqueued)?;
    let corrupt = |e: String| crate::StoreError::Corrupt {
        what: format!("buffered update {seq}: {e}"),
    };
    Ok(crate::BufferedUpdate {
        seq,
        tenant: ferry_domain::TenantId::new(tenant).map_err(|e| corrupt(e.to_string()))?,
        key,
        operation,
        payload: if ferry_domain::json_text::has_reserved_key(&payload) {
            return Err(corrupt(format!(
                "the payload holds the key {:?}, which would not read back unchanged",
                ferry_domain::json_text::RESERVED_KEY
            )));
        } else {
            serde_json::from_str(&payload).map_err(|e| corrupt(e.to_string()))?
        },
        state,
        attempts,
        last_error,
        enqueued_at,
    })
}

/// `name, scope, token_sha256, created_by, created_at, revoked_at`.
pub(crate) type TokenRow<T> = (String, String, String, String, T, Option<T>);

pub(crate) fn token<T>(
    row: TokenRow<T>,
    at: impl Fn(T) -> Result<DateTime<Utc>>,
) -> Result<TokenRecord> {
    let (name, scope, sha256, created_by, created_at, revoked_at) = row;
    Ok(TokenRecord {
        scope: TokenScope::parse(&scope)
            .ok_or_else(|| corrupt(format!("token {name} has unknown scope {scope:?}")))?,
        name,
        sha256,
        created_by,
        created_at: at(created_at)?,
        revoked_at: revoked_at.map(&at).transpose()?,
    })
}

/// `seq, actor, operation, target, outcome, at`.
pub(crate) type OperationRow<T> = (i64, String, String, String, String, T);

pub(crate) fn operation<T>(
    row: OperationRow<T>,
    at: impl Fn(T) -> Result<DateTime<Utc>>,
) -> Result<OperationRecord> {
    let (seq, actor, operation, target, outcome, when) = row;
    Ok(OperationRecord {
        seq,
        actor,
        operation,
        target,
        outcome,
        at: at(when)?,
    })
}

/// `router_id, migration_id, operation, phase, path, reason, count`.
pub(crate) type RouteCountRow = (String, String, String, String, String, String, i64);

pub(crate) fn route_count(row: RouteCountRow) -> Result<(RouterId, RouteCount)> {
    let (router, migration, operation, phase, path, reason, n) = row;
    Ok((
        router_id(router)?,
        RouteCount {
            migration,
            operation,
            phase,
            path,
            reason,
            count: count(n)?,
        },
    ))
}
