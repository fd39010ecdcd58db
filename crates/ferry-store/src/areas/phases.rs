//! Phase changes, the one write that moves tenants between phases, and the tenants per phase.
//!
//! A call is one transaction taking the same steps in both dialects: bump the store-wide change
//! counter, update each tenant still at its expected version (re-checking the buffer and the
//! mismatches inside the write when asked), write one audit entry per applied change, forget
//! the copy progress the change makes stale and, on PostgreSQL, notify routers. A call where
//! nothing applied rolls back, so the counter moves only with a change. The dialects differ in
//! how a batch reaches the database: arrays and `unnest` on PostgreSQL, one prepared statement
//! per tenant and JSON arrays on SQLite.

use std::collections::HashSet;

use async_trait::async_trait;
use ferry_domain::MigrationId;
use serde_json::json;
use sqlx::{PgConnection, SqliteConnection};

use crate::error::{QueryContext, Result};
use crate::facts::{self, Resets};
use crate::model::{AppliedChanges, AuditMeta, PhaseChange, PhaseCount};
use crate::pg::PgStore;
use crate::rows;
use crate::sqlite::{self, SqliteStore};

/// Phase changes and the tenants per phase.
#[async_trait]
pub trait PhaseStore {
    /// Persists phase changes in one transaction per call: each change applies only if its
    /// tenant is still at `expected_version` (otherwise it is reported as a conflict), writes
    /// one audit entry, and carries one new value of the change counter.
    async fn apply_changes(
        &self,
        migration: &MigrationId,
        changes: &[PhaseChange],
        meta: &AuditMeta,
    ) -> Result<AppliedChanges>;
    /// Tenants per phase for every migration.
    async fn status(&self) -> Result<Vec<PhaseCount>>;
}

/// Splits a batch into the changes whose tenants the update matched and the conflicts.
fn partition(
    changes: &[PhaseChange],
    updated: Vec<String>,
) -> (Vec<&PhaseChange>, Vec<&PhaseChange>) {
    let updated: HashSet<String> = updated.into_iter().collect();
    changes
        .iter()
        .partition(|c| updated.contains(c.tenant.as_str()))
}

/// What a call did; `version` is 0 when nothing applied and the transaction rolled back.
fn outcome(
    applied: Vec<&PhaseChange>,
    conflicts: Vec<&PhaseChange>,
    version: i64,
) -> AppliedChanges {
    AppliedChanges {
        applied: applied.into_iter().map(|c| c.tenant.clone()).collect(),
        conflicts: conflicts.into_iter().map(|c| c.tenant.clone()).collect(),
        change_version: version,
    }
}

/// Decodes `(migration, phase, tenants, paused, rows)` groups, sorted by migration and phase.
fn phase_counts(groups: Vec<(String, String, i64, i64, i64)>) -> Result<Vec<PhaseCount>> {
    let mut out = groups
        .into_iter()
        .map(|(m, p, tenants, paused, row_count)| {
            Ok(PhaseCount {
                migration: rows::migration_id(m)?,
                phase: rows::phase(&p)?,
                tenants: rows::count(tenants)?,
                paused: rows::count(paused)?,
                rows: rows::count(row_count)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| (&a.migration, a.phase).cmp(&(&b.migration, b.phase)));
    Ok(out)
}

#[async_trait]
impl PhaseStore for PgStore {
    async fn apply_changes(
        &self,
        migration: &MigrationId,
        changes: &[PhaseChange],
        meta: &AuditMeta,
    ) -> Result<AppliedChanges> {
        if changes.is_empty() {
            return Ok(AppliedChanges::default());
        }
        facts::reject_duplicates(changes)?;
        let mut tx = self.pool.begin().await.doing("begin phase change")?;
        // Taking the counter row lock serializes phase changes store-wide, so counter values
        // commit in order and a router reading `changes_since(v)` can never miss one.
        let version: i64 = sqlx::query_scalar(
            "UPDATE ferry_change_counter SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await
        .doing("bump change counter")?;
        let updated = pg_update_phases(&mut tx, migration, version, changes).await?;
        let (applied, conflicts) = partition(changes, updated);
        if applied.is_empty() {
            tx.rollback().await.doing("roll back empty phase change")?;
            return Ok(outcome(applied, conflicts, 0));
        }
        pg_write_audit(&mut tx, migration, meta, version, &applied).await?;
        pg_reset_progress(&mut tx, migration, &facts::resets(&applied)).await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(version.to_string())
            .execute(&mut *tx)
            .await
            .doing("notify routers")?;
        ferry_crash::crash_point!("phase_change_commit");
        tx.commit().await.doing("commit phase change")?;
        Ok(outcome(applied, conflicts, version))
    }

    async fn status(&self) -> Result<Vec<PhaseCount>> {
        let groups: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT migration_id, phase, count(*), count(*) FILTER (WHERE paused),
                    coalesce(sum(row_count), 0)::bigint
             FROM ferry_tenant_phases GROUP BY migration_id, phase",
        )
        .fetch_all(&self.pool)
        .await
        .doing("count tenants per phase")?;
        phase_counts(groups)
    }
}

#[async_trait]
impl PhaseStore for SqliteStore {
    async fn apply_changes(
        &self,
        migration: &MigrationId,
        changes: &[PhaseChange],
        meta: &AuditMeta,
    ) -> Result<AppliedChanges> {
        if changes.is_empty() {
            return Ok(AppliedChanges::default());
        }
        facts::reject_duplicates(changes)?;
        let now = sqlite::now_ms();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing("begin phase change")?;
        let version: i64 = sqlx::query_scalar(
            "UPDATE ferry_change_counter SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await
        .doing("bump change counter")?;
        let updated = sqlite_update_phases(&mut tx, migration, version, now, changes).await?;
        let (applied, conflicts) = partition(changes, updated);
        if applied.is_empty() {
            tx.rollback().await.doing("roll back empty phase change")?;
            return Ok(outcome(applied, conflicts, 0));
        }
        sqlite_write_audit(&mut tx, migration, meta, version, now, &applied).await?;
        sqlite_reset_progress(&mut tx, migration, now, &facts::resets(&applied)).await?;
        ferry_crash::crash_point!("phase_change_commit");
        tx.commit().await.doing("commit phase change")?;
        Ok(outcome(applied, conflicts, version))
    }

    async fn status(&self) -> Result<Vec<PhaseCount>> {
        let groups: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT migration_id, phase, count(*), coalesce(sum(paused), 0),
                    coalesce(sum(row_count), 0)
             FROM ferry_tenant_phases GROUP BY migration_id, phase",
        )
        .fetch_all(&self.pool)
        .await
        .doing("count tenants per phase")?;
        phase_counts(groups)
    }
}

/// Moves every tenant still at its expected version (and, when asked, with an empty buffer and
/// no open mismatches) to its new phase; returns the tenants it moved.
async fn pg_update_phases(
    conn: &mut PgConnection,
    migration: &MigrationId,
    version: i64,
    changes: &[PhaseChange],
) -> Result<Vec<String>> {
    let ids: Vec<&str> = changes.iter().map(|c| c.tenant.as_str()).collect();
    let expected: Vec<i64> = changes.iter().map(|c| c.expected_version).collect();
    let to_phase: Vec<&str> = changes.iter().map(|c| c.to_phase.as_str()).collect();
    let to_paused: Vec<bool> = changes.iter().map(|c| c.to_paused).collect();
    let recheck_buffer: Vec<bool> = changes.iter().map(|c| c.recheck_buffer).collect();
    let recheck_mismatches: Vec<bool> = changes.iter().map(|c| c.recheck_mismatches).collect();
    sqlx::query_scalar(
        "UPDATE ferry_tenant_phases AS p
         SET phase = i.to_phase, paused = i.to_paused, version = p.version + 1,
             changed_at_version = $2, updated_at = now()
         FROM unnest($3::text[], $4::bigint[], $5::text[], $6::bool[], $7::bool[], $8::bool[])
              AS i(tenant_id, expected_version, to_phase, to_paused, recheck_buffer,
                   recheck_mismatches)
         WHERE p.migration_id = $1 AND p.tenant_id = i.tenant_id
           AND p.version = i.expected_version
           AND (NOT i.recheck_buffer OR
               NOT EXISTS (SELECT 1 FROM ferry_update_buffer b WHERE b.migration_id = $1
                           AND b.tenant_id = i.tenant_id AND b.state <> 'applied'))
           AND (NOT i.recheck_mismatches OR
               NOT EXISTS (SELECT 1 FROM ferry_mismatches x WHERE x.migration_id = $1
                           AND x.tenant_id = i.tenant_id AND x.resolved_at IS NULL))
         RETURNING p.tenant_id",
    )
    .bind(migration.as_str())
    .bind(version)
    .bind(&ids)
    .bind(&expected)
    .bind(&to_phase)
    .bind(&to_paused)
    .bind(&recheck_buffer)
    .bind(&recheck_mismatches)
    .fetch_all(&mut *conn)
    .await
    .doing("apply phase changes")
}

async fn sqlite_update_phases(
    conn: &mut SqliteConnection,
    migration: &MigrationId,
    version: i64,
    now: i64,
    changes: &[PhaseChange],
) -> Result<Vec<String>> {
    // One prepared statement per tenant inside the one transaction: SQLite runs in-process,
    // so there is no round trip to save, and an UPDATE joined to `json_each` makes its
    // planner scan the whole table once per batch row.
    let mut updated = Vec::new();
    for c in changes {
        let done = sqlx::query(
            "UPDATE ferry_tenant_phases
             SET phase = ?1, paused = ?2, version = version + 1, changed_at_version = ?3,
                 updated_at = ?4
             WHERE migration_id = ?5 AND tenant_id = ?6 AND version = ?7
               AND (NOT ?8 OR
                   NOT EXISTS (SELECT 1 FROM ferry_update_buffer b WHERE b.migration_id = ?5
                               AND b.tenant_id = ?6 AND b.state <> 'applied'))
               AND (NOT ?9 OR
                   NOT EXISTS (SELECT 1 FROM ferry_mismatches x WHERE x.migration_id = ?5
                               AND x.tenant_id = ?6 AND x.resolved_at IS NULL))",
        )
        .bind(c.to_phase.as_str())
        .bind(c.to_paused)
        .bind(version)
        .bind(now)
        .bind(migration.as_str())
        .bind(c.tenant.as_str())
        .bind(c.expected_version)
        .bind(c.recheck_buffer)
        .bind(c.recheck_mismatches)
        .execute(&mut *conn)
        .await
        .doing("apply phase change")?;
        if done.rows_affected() == 1 {
            updated.push(c.tenant.as_str().to_owned());
        }
    }
    Ok(updated)
}

/// One audit entry per applied change, in the batch's order, all carrying `version`.
async fn pg_write_audit(
    conn: &mut PgConnection,
    migration: &MigrationId,
    meta: &AuditMeta,
    version: i64,
    applied: &[&PhaseChange],
) -> Result<()> {
    let text = |f: fn(&PhaseChange) -> &str| applied.iter().copied().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO ferry_audit_log (migration_id, tenant_id, action, from_phase, from_paused,
             to_phase, to_paused, actor, reason, forced_guards, change_version)
         SELECT $1, i.tenant_id, i.action, i.from_phase, i.from_paused, i.to_phase,
             i.to_paused, $2, $3, i.forced, $4
         FROM unnest($5::text[], $6::text[], $7::text[], $8::bool[], $9::text[], $10::bool[],
              $11::text[]) WITH ORDINALITY
              AS i(tenant_id, action, from_phase, from_paused, to_phase, to_paused, forced, n)
         ORDER BY i.n",
    )
    .bind(migration.as_str())
    .bind(&meta.actor)
    .bind(&meta.reason)
    .bind(version)
    .bind(text(|c| c.tenant.as_str()))
    .bind(text(|c| c.action.as_str()))
    .bind(text(|c| c.from.phase.as_str()))
    .bind(applied.iter().map(|c| c.from.paused).collect::<Vec<_>>())
    .bind(text(|c| c.to_phase.as_str()))
    .bind(applied.iter().map(|c| c.to_paused).collect::<Vec<_>>())
    .bind(
        applied
            .iter()
            .map(|c| rows::guards_to_text(&c.forced_guards))
            .collect::<Vec<_>>(),
    )
    .execute(&mut *conn)
    .await
    .doing("write audit log")?;
    Ok(())
}

async fn sqlite_write_audit(
    conn: &mut SqliteConnection,
    migration: &MigrationId,
    meta: &AuditMeta,
    version: i64,
    now: i64,
    applied: &[&PhaseChange],
) -> Result<()> {
    let audit = serde_json::Value::from(
        applied
            .iter()
            .map(|c| {
                json!([
                    c.tenant.as_str(),
                    c.action.as_str(),
                    c.from.phase.as_str(),
                    c.from.paused,
                    c.to_phase.as_str(),
                    c.to_paused,
                    rows::guards_to_text(&c.forced_guards)
                ])
            })
            .collect::<Vec<_>>(),
    )
    .to_string();
    sqlx::query(
        "INSERT INTO ferry_audit_log (migration_id, tenant_id, action, from_phase, from_paused,
             to_phase, to_paused, actor, reason, forced_guards, change_version, at)
         SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
                json_extract(value, '$[2]'), json_extract(value, '$[3]'),
                json_extract(value, '$[4]'), json_extract(value, '$[5]'), ?2, ?3,
                json_extract(value, '$[6]'), ?4, ?5
         FROM json_each(?6) ORDER BY key",
    )
    .bind(migration.as_str())
    .bind(&meta.actor)
    .bind(&meta.reason)
    .bind(version)
    .bind(now)
    .bind(audit)
    .execute(&mut *conn)
    .await
    .doing("write audit log")?;
    Ok(())
}

/// Forgets the copy progress the applied changes made stale (see [`facts::resets`]).
async fn pg_reset_progress(
    conn: &mut PgConnection,
    migration: &MigrationId,
    resets: &Resets,
) -> Result<()> {
    let bumped: Vec<&String> = resets
        .all_progress
        .iter()
        .chain(&resets.reverse_sync)
        .collect();
    if !bumped.is_empty() {
        sqlx::query(
            "UPDATE ferry_tenant_phases SET copy_epoch = copy_epoch + 1
             WHERE migration_id = $1 AND tenant_id = ANY($2)",
        )
        .bind(migration.as_str())
        .bind(&bumped)
        .execute(&mut *conn)
        .await
        .doing("start a new copy epoch")?;
    }
    if !resets.all_progress.is_empty() {
        sqlx::query("DELETE FROM ferry_backfill WHERE migration_id = $1 AND tenant_id = ANY($2)")
            .bind(migration.as_str())
            .bind(&resets.all_progress)
            .execute(&mut *conn)
            .await
            .doing("reset backfill progress")?;
    }
    if !resets.reverse_sync.is_empty() {
        sqlx::query(
            "INSERT INTO ferry_backfill
                 (migration_id, tenant_id, direction, rows_done, rows_total, complete, epoch)
             SELECT $1, p.tenant_id, 'reverse', 0, 0, false, p.copy_epoch
             FROM ferry_tenant_phases AS p
             WHERE p.migration_id = $1 AND p.tenant_id = ANY($2)
             ON CONFLICT (migration_id, tenant_id, direction) DO UPDATE
             SET rows_done = 0, rows_total = 0, complete = false, last_key = NULL,
                 throttled = NULL, epoch = excluded.epoch, updated_at = now()",
        )
        .bind(migration.as_str())
        .bind(&resets.reverse_sync)
        .execute(&mut *conn)
        .await
        .doing("mark the source stale")?;
    }
    Ok(())
}

async fn sqlite_reset_progress(
    conn: &mut SqliteConnection,
    migration: &MigrationId,
    now: i64,
    resets: &Resets,
) -> Result<()> {
    let bumped: Vec<&str> = resets
        .all_progress
        .iter()
        .chain(&resets.reverse_sync)
        .map(String::as_str)
        .collect();
    if !bumped.is_empty() {
        sqlx::query(
            "UPDATE ferry_tenant_phases SET copy_epoch = copy_epoch + 1
             WHERE migration_id = ?1 AND tenant_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(migration.as_str())
        .bind(sqlite::json_ids(bumped))
        .execute(&mut *conn)
        .await
        .doing("start a new copy epoch")?;
    }
    if !resets.all_progress.is_empty() {
        sqlx::query(
            "DELETE FROM ferry_backfill WHERE migration_id = ?1
             AND tenant_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(migration.as_str())
        .bind(sqlite::json_ids(
            resets.all_progress.iter().map(String::as_str),
        ))
        .execute(&mut *conn)
        .await
        .doing("reset backfill progress")?;
    }
    if !resets.reverse_sync.is_empty() {
        sqlx::query(
            "INSERT INTO ferry_backfill
                 (migration_id, tenant_id, direction, rows_done, rows_total, complete, updated_at,
                  epoch)
             SELECT ?1, p.tenant_id, 'reverse', 0, 0, 0, ?3, p.copy_epoch
             FROM ferry_tenant_phases AS p
             WHERE p.migration_id = ?1 AND p.tenant_id IN (SELECT value FROM json_each(?2))
             ON CONFLICT (migration_id, tenant_id, direction) DO UPDATE
             SET rows_done = 0, rows_total = 0, complete = 0, last_key = NULL,
                 throttled = NULL, updated_at = excluded.updated_at, epoch = excluded.epoch",
        )
        .bind(migration.as_str())
        .bind(sqlite::json_ids(
            resets.reverse_sync.iter().map(String::as_str),
        ))
        .bind(now)
        .execute(&mut *conn)
        .await
        .doing("mark the source stale")?;
    }
    Ok(())
}
