//! Copy progress and the copier's controls: what a copy has done, and what an operator has
//! told it to do.
//!
//! A copy's progress row is also its checkpoint, and is accepted only in the phases where
//! that copy runs ([`facts::progress_allowed`]) and in the tenant's current copy epoch, checked
//! with the tenant's row locked in the same transaction, so a copier from an earlier epoch
//! cannot resume from its old key or make a guard pass. Controls live in one row per scope, the migration's (`*`) and each tenant's;
//! the control in force merges the two ([`facts::controls`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_domain::{MigrationId, TenantId};

use crate::MigrationStore;
use crate::error::{QueryContext, Result, StoreError};
use crate::facts;
use crate::model::{BackfillProgress, ControlChange, CopyControl};
use crate::pg::{self, PgStore};
use crate::rows;
use crate::sqlite::{self, SqliteStore};

/// Copy progress (checkpoints) and copy controls.
#[async_trait]
pub trait CopyStore {
    /// Records a copy's progress; it is also the copy's checkpoint.
    async fn record_backfill(&self, progress: &BackfillProgress) -> Result<()>;
    /// Copy progress of a migration's tenants (or of one tenant), both directions.
    async fn progress(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<BackfillProgress>>;
    /// Sets the copier controls for a whole migration (`tenant: None`) or one tenant.
    async fn set_control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
        control: CopyControl,
    ) -> Result<()>;
    /// Changes some controls of one scope atomically; returns the scope's controls after.
    async fn change_control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
        change: ControlChange,
    ) -> Result<CopyControl>;
    /// The control in force: the migration's merged with the tenant's (`tenant: None` for the
    /// migration's own).
    async fn control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
    ) -> Result<CopyControl>;
    /// One scope's own setting (the migration's, or a tenant's), not merged.
    async fn scope_control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
    ) -> Result<CopyControl>;
}

/// Progress is accepted only for a registered tenant, in a phase where its copy runs, and in
/// the tenant's current copy epoch.
fn check_progress(p: &BackfillProgress, state: Option<(String, i64)>) -> Result<()> {
    let Some((phase, current)) = state else {
        return Err(StoreError::TenantNotFound {
            migration: p.migration.clone(),
            tenant: p.tenant.clone(),
        });
    };
    let phase = rows::phase(&phase)?;
    if !facts::progress_allowed(p.direction, phase) {
        return Err(StoreError::ProgressOutOfPhase {
            migration: p.migration.clone(),
            tenant: p.tenant.clone(),
            phase,
            direction: p.direction.as_str(),
        });
    }
    if p.epoch != current {
        return Err(StoreError::ProgressStale {
            migration: p.migration.clone(),
            tenant: p.tenant.clone(),
            epoch: p.epoch,
            current,
        });
    }
    Ok(())
}

/// Fails unless the migration, and the tenant if one is named, exist.
async fn scope_exists<S: MigrationStore + Sync + ?Sized>(
    store: &S,
    migration: &MigrationId,
    tenant: Option<&TenantId>,
) -> Result<()> {
    store.migration(migration).await?;
    if let Some(t) = tenant {
        store.tenant(migration, t).await?;
    }
    Ok(())
}

/// A rate limit as stored (rows/s; one too large for the column is the largest it holds).
fn limit_param(rate: u64) -> i64 {
    i64::try_from(rate).unwrap_or(i64::MAX)
}

/// A scope's controls as an upsert returns them: `(paused, cancelled, rate_limit)`.
fn stored_control((paused, cancelled, limit): (bool, bool, Option<i64>)) -> CopyControl {
    CopyControl {
        paused,
        cancelled,
        rate_limit: limit.map(|r| u64::try_from(r).unwrap_or(0)),
    }
}

#[async_trait]
impl CopyStore for PgStore {
    async fn record_backfill(&self, p: &BackfillProgress) -> Result<()> {
        let mut tx = self.pool.begin().await.doing("begin recording progress")?;
        // The tenant's row is locked (shared) until the progress is written: a phase change
        // that makes it stale waits, or committed before and is seen here.
        let state: Option<(String, i64)> = sqlx::query_as(
            "SELECT phase, copy_epoch FROM ferry_tenant_phases
             WHERE migration_id = $1 AND tenant_id = $2 FOR SHARE",
        )
        .bind(p.migration.as_str())
        .bind(p.tenant.as_str())
        .fetch_optional(&mut *tx)
        .await
        .doing("read the tenant's phase and epoch")?;
        check_progress(p, state)?;
        sqlx::query(
            "INSERT INTO ferry_backfill (migration_id, tenant_id, direction, rows_done, rows_total,
                 complete, last_key, batch_size, rows_per_s, throttled, epoch)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (migration_id, tenant_id, direction) DO UPDATE
             SET rows_done = excluded.rows_done, rows_total = excluded.rows_total,
                 complete = excluded.complete, last_key = excluded.last_key,
                 batch_size = excluded.batch_size, rows_per_s = excluded.rows_per_s,
                 throttled = excluded.throttled, epoch = excluded.epoch, updated_at = now()",
        )
        .bind(p.migration.as_str())
        .bind(p.tenant.as_str())
        .bind(p.direction.as_str())
        .bind(i64::try_from(p.rows_done).unwrap_or(i64::MAX))
        .bind(i64::try_from(p.rows_total).unwrap_or(i64::MAX))
        .bind(p.complete)
        .bind(facts::key_to_text(p.last_key.as_deref()))
        .bind(i64::try_from(p.batch_size).unwrap_or(i64::MAX))
        .bind(p.rows_per_s)
        .bind(p.throttled.as_deref())
        .bind(p.epoch)
        .execute(&mut *tx)
        .await
        .doing("record backfill progress")?;
        tx.commit().await.doing("commit backfill progress")?;
        Ok(())
    }

    async fn progress(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<BackfillProgress>> {
        let rows: Vec<facts::ProgressRow<DateTime<Utc>>> = sqlx::query_as(
            "SELECT tenant_id, direction, last_key, rows_done, rows_total, complete, batch_size,
                    rows_per_s, throttled, updated_at, epoch
             FROM ferry_backfill WHERE migration_id = $1 AND ($2::text IS NULL OR tenant_id = $2)
             ORDER BY tenant_id, direction",
        )
        .bind(migration.as_str())
        .bind(tenant.map(TenantId::as_str))
        .fetch_all(&self.pool)
        .await
        .doing("read copy progress")?;
        rows.into_iter()
            .map(|r| facts::progress(migration, r, pg::ok))
            .collect()
    }

    async fn set_control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
        control: CopyControl,
    ) -> Result<()> {
        scope_exists(self, migration, tenant).await?;
        sqlx::query(
            "INSERT INTO ferry_copy_controls (migration_id, scope, paused, cancelled, rate_limit)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (migration_id, scope) DO UPDATE
             SET paused = excluded.paused, cancelled = excluded.cancelled,
                 rate_limit = excluded.rate_limit, updated_at = now()",
        )
        .bind(migration.as_str())
        .bind(tenant.map_or(facts::MIGRATION_SCOPE, TenantId::as_str))
        .bind(control.paused)
        .bind(control.cancelled)
        .bind(control.rate_limit.map(limit_param))
        .execute(&self.pool)
        .await
        .doing("set copy control")?;
        Ok(())
    }

    async fn change_control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
        change: ControlChange,
    ) -> Result<CopyControl> {
        scope_exists(self, migration, tenant).await?;
        let stored = sqlx::query_as(
            "INSERT INTO ferry_copy_controls (migration_id, scope, paused, cancelled, rate_limit)
             VALUES ($1, $2, coalesce($3, false), coalesce($4, false), $5)
             ON CONFLICT (migration_id, scope) DO UPDATE
             SET paused = coalesce($3, ferry_copy_controls.paused),
                 cancelled = coalesce($4, ferry_copy_controls.cancelled),
                 rate_limit = CASE WHEN $6 THEN $5 ELSE ferry_copy_controls.rate_limit END,
                 updated_at = now()
             RETURNING paused, cancelled, rate_limit",
        )
        .bind(migration.as_str())
        .bind(tenant.map_or(facts::MIGRATION_SCOPE, TenantId::as_str))
        .bind(change.paused)
        .bind(change.cancelled)
        .bind(change.rate_limit.flatten().map(limit_param))
        .bind(change.rate_limit.is_some())
        .fetch_one(&self.pool)
        .await
        .doing("change copy controls")?;
        Ok(stored_control(stored))
    }

    async fn control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
    ) -> Result<CopyControl> {
        self.control_rows(migration, tenant, true).await
    }

    async fn scope_control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
    ) -> Result<CopyControl> {
        self.control_rows(migration, tenant, false).await
    }
}

impl PgStore {
    /// The control rows of a scope (with `merged`, also the migration-wide row), merged.
    async fn control_rows(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
        merged: bool,
    ) -> Result<CopyControl> {
        let rows: Vec<(String, bool, bool, Option<i64>)> = sqlx::query_as(
            "SELECT scope, paused, cancelled, rate_limit FROM ferry_copy_controls
             WHERE migration_id = $1 AND (scope = $2 OR ($3 AND scope = '*'))",
        )
        .bind(migration.as_str())
        .bind(tenant.map_or(facts::MIGRATION_SCOPE, TenantId::as_str))
        .bind(merged)
        .fetch_all(&self.pool)
        .await
        .doing("read copy controls")?;
        Ok(facts::controls(rows, tenant))
    }
}

#[async_trait]
impl CopyStore for SqliteStore {
    async fn record_backfill(&self, p: &BackfillProgress) -> Result<()> {
        // One writer at a time: a phase change cannot slip between the check and the write.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing("begin recording progress")?;
        let state: Option<(String, i64)> = sqlx::query_as(
            "SELECT phase, copy_epoch FROM ferry_tenant_phases
             WHERE migration_id = ?1 AND tenant_id = ?2",
        )
        .bind(p.migration.as_str())
        .bind(p.tenant.as_str())
        .fetch_optional(&mut *tx)
        .await
        .doing("read the tenant's phase and epoch")?;
        check_progress(p, state)?;
        sqlx::query(
            "INSERT INTO ferry_backfill (migration_id, tenant_id, direction, rows_done, rows_total,
                 complete, last_key, batch_size, rows_per_s, throttled, updated_at, epoch)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (migration_id, tenant_id, direction) DO UPDATE
             SET rows_done = excluded.rows_done, rows_total = excluded.rows_total,
                 complete = excluded.complete, last_key = excluded.last_key,
                 batch_size = excluded.batch_size, rows_per_s = excluded.rows_per_s,
                 throttled = excluded.throttled, updated_at = excluded.updated_at,
                 epoch = excluded.epoch",
        )
        .bind(p.migration.as_str())
        .bind(p.tenant.as_str())
        .bind(p.direction.as_str())
        .bind(i64::try_from(p.rows_done).unwrap_or(i64::MAX))
        .bind(i64::try_from(p.rows_total).unwrap_or(i64::MAX))
        .bind(p.complete)
        .bind(facts::key_to_text(p.last_key.as_deref()))
        .bind(i64::try_from(p.batch_size).unwrap_or(i64::MAX))
        .bind(p.rows_per_s)
        .bind(p.throttled.as_deref())
        .bind(sqlite::now_ms())
        .bind(p.epoch)
        .execute(&mut *tx)
        .await
        .doing("record backfill progress")?;
        tx.commit().await.doing("commit backfill progress")?;
        Ok(())
    }

    async fn progress(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<BackfillProgress>> {
        let rows: Vec<facts::ProgressRow<i64>> = sqlx::query_as(
            "SELECT tenant_id, direction, last_key, rows_done, rows_total, complete, batch_size,
                    rows_per_s, throttled, updated_at, epoch
             FROM ferry_backfill WHERE migration_id = ?1 AND (?2 IS NULL OR tenant_id = ?2)
             ORDER BY tenant_id, direction",
        )
        .bind(migration.as_str())
        .bind(tenant.map(TenantId::as_str))
        .fetch_all(&self.pool)
        .await
        .doing("read copy progress")?;
        rows.into_iter()
            .map(|r| facts::progress(migration, r, rows::from_millis))
            .collect()
    }

    async fn set_control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
        control: CopyControl,
    ) -> Result<()> {
        scope_exists(self, migration, tenant).await?;
        sqlx::query(
            "INSERT INTO ferry_copy_controls (migration_id, scope, paused, cancelled, rate_limit, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (migration_id, scope) DO UPDATE
             SET paused = excluded.paused, cancelled = excluded.cancelled,
                 rate_limit = excluded.rate_limit, updated_at = excluded.updated_at",
        )
        .bind(migration.as_str())
        .bind(tenant.map_or(facts::MIGRATION_SCOPE, TenantId::as_str))
        .bind(control.paused)
        .bind(control.cancelled)
        .bind(control.rate_limit.map(limit_param))
        .bind(sqlite::now_ms())
        .execute(&self.pool)
        .await
        .doing("set copy control")?;
        Ok(())
    }

    async fn change_control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
        change: ControlChange,
    ) -> Result<CopyControl> {
        scope_exists(self, migration, tenant).await?;
        let stored = sqlx::query_as(
            "INSERT INTO ferry_copy_controls (migration_id, scope, paused, cancelled, rate_limit, updated_at)
             VALUES (?1, ?2, coalesce(?3, false), coalesce(?4, false), ?5, ?7)
             ON CONFLICT (migration_id, scope) DO UPDATE
             SET paused = coalesce(?3, ferry_copy_controls.paused),
                 cancelled = coalesce(?4, ferry_copy_controls.cancelled),
                 rate_limit = CASE WHEN ?6 THEN ?5 ELSE ferry_copy_controls.rate_limit END,
                 updated_at = excluded.updated_at
             RETURNING paused, cancelled, rate_limit",
        )
        .bind(migration.as_str())
        .bind(tenant.map_or(facts::MIGRATION_SCOPE, TenantId::as_str))
        .bind(change.paused)
        .bind(change.cancelled)
        .bind(change.rate_limit.flatten().map(limit_param))
        .bind(change.rate_limit.is_some())
        .bind(sqlite::now_ms())
        .fetch_one(&self.pool)
        .await
        .doing("change copy controls")?;
        Ok(stored_control(stored))
    }

    async fn control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
    ) -> Result<CopyControl> {
        self.control_rows(migration, tenant, true).await
    }

    async fn scope_control(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
    ) -> Result<CopyControl> {
        self.control_rows(migration, tenant, false).await
    }
}

impl SqliteStore {
    /// The control rows of a scope (with `merged`, also the migration-wide row), merged.
    async fn control_rows(
        &self,
        migration: &MigrationId,
        tenant: Option<&TenantId>,
        merged: bool,
    ) -> Result<CopyControl> {
        let rows: Vec<(String, bool, bool, Option<i64>)> = sqlx::query_as(
            "SELECT scope, paused, cancelled, rate_limit FROM ferry_copy_controls
             WHERE migration_id = ?1 AND (scope = ?2 OR (?3 AND scope = '*'))",
        )
        .bind(migration.as_str())
        .bind(tenant.map_or(facts::MIGRATION_SCOPE, TenantId::as_str))
        .bind(merged)
        .fetch_all(&self.pool)
        .await
        .doing("read copy controls")?;
        Ok(facts::controls(rows, tenant))
    }
}
