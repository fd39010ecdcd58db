//! The cold tier's manifest: which Parquet segments hold a tenant's archived rows, and how far
//! its archive reaches.
//!
//! Segment ids are reserved (`pending`) before their objects are written, so a crash leaves
//! only garbage, which [`ManifestStore::garbage_segments`] finds and
//! [`ManifestStore::forget_segment`] removes. The live manifest changes only in
//! [`ManifestStore::commit_segments`]: one transaction adds and retires segments, marks the
//! buffered changes they absorbed applied and moves the watermark, so a reader sees the old
//! manifest or the new one, never a mix.

use std::time::Duration;

use async_trait::async_trait;
use ferry_domain::{MigrationId, TenantId};
use sqlx::AssertSqlSafe;

use crate::error::{QueryContext, Result, StoreError};
use crate::model::{SegmentCommit, SegmentRecord};
use crate::pg::PgStore;
use crate::rows;
use crate::sqlite::{self, SqliteStore};

/// The cold tier's segment manifest and archive watermarks.
#[async_trait]
pub trait ManifestStore {
    /// Reserves an id for a tenant's next segment (pending until committed; a pending
    /// segment never committed is garbage after a crash).
    async fn reserve_segment(&self, migration: &MigrationId, tenant: &TenantId) -> Result<i64>;
    /// Applies a [`SegmentCommit`] atomically.
    async fn commit_segments(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        commit: &SegmentCommit,
    ) -> Result<()>;
    /// A tenant's live segments, by id.
    async fn segments(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<SegmentRecord>>;
    /// Retired segments, and pending ones reserved longer than `stale` ago: candidates for
    /// garbage collection, each to be claimed with [`ManifestStore::forget_segment`] before
    /// its object is deleted.
    async fn garbage_segments(
        &self,
        migration: &MigrationId,
        stale: Duration,
    ) -> Result<Vec<SegmentRecord>>;
    /// Forgets a segment that is not live (retired, or a reservation never committed);
    /// whether it did. A collector deletes the object only after this returned true: a
    /// reservation an archive committed meanwhile is live and stays, object and all.
    async fn forget_segment(&self, id: i64) -> Result<bool>;
    /// The tenant's archive watermark (RFC 3339), if it has been archived.
    async fn archived_through(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Option<String>>;
}

/// Refuses a commit that retired fewer segments than it named: another commit retired them
/// first, so this one was built on an older manifest.
fn check_retired(
    retired: u64,
    migration: &MigrationId,
    tenant: &TenantId,
    commit: &SegmentCommit,
) -> Result<()> {
    if retired != commit.retire.len() as u64 {
        return Err(StoreError::Conflict {
            migration: migration.clone(),
            tenant: tenant.clone(),
            expected: commit.retire.first().copied().unwrap_or(0),
        });
    }
    Ok(())
}

/// Refuses adding a segment that is not one of the tenant's pending reservations.
fn check_added(added: u64, migration: &MigrationId, tenant: &TenantId, id: i64) -> Result<()> {
    if added != 1 {
        return Err(StoreError::InvalidRequest(format!(
            "segment {id} of {migration}/{tenant} is not a pending reservation"
        )));
    }
    Ok(())
}

#[async_trait]
impl ManifestStore for PgStore {
    async fn reserve_segment(&self, migration: &MigrationId, tenant: &TenantId) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO ferry_segments (migration_id, tenant_id) VALUES ($1, $2) RETURNING segment_id",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .fetch_one(&self.pool)
        .await
        .doing("reserve a segment id")
    }

    async fn commit_segments(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        commit: &SegmentCommit,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.doing("begin a segment commit")?;
        let retired = sqlx::query(
            "UPDATE ferry_segments SET state = 'retired', retired_at = now()
             WHERE segment_id = ANY($1) AND migration_id = $2 AND tenant_id = $3 AND state = 'live'",
        )
        .bind(&commit.retire)
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await
        .doing("retire segments")?;
        check_retired(retired.rows_affected(), migration, tenant, commit)?;
        for s in &commit.add {
            let added = sqlx::query(
                "UPDATE ferry_segments SET state = 'live', path = $2, row_count = $3, min_key = $4,
                     max_key = $5, checksum = $6
                 WHERE segment_id = $1 AND migration_id = $7 AND tenant_id = $8 AND state = 'pending'",
            )
            .bind(s.id)
            .bind(&s.path)
            .bind(i64::try_from(s.rows).unwrap_or(i64::MAX))
            .bind(&s.min_key)
            .bind(&s.max_key)
            .bind(&s.checksum)
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .doing("add a segment")?;
            check_added(added.rows_affected(), migration, tenant, s.id)?;
        }
        sqlx::query("UPDATE ferry_update_buffer SET state = 'applied' WHERE seq = ANY($1)")
            .bind(&commit.applied)
            .execute(&mut *tx)
            .await
            .doing("mark buffered updates applied")?;
        for r in &commit.requeue {
            sqlx::query(
                "INSERT INTO ferry_update_buffer (migration_id, tenant_id, entity_key, operation, payload)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .bind(&r.key)
            .bind(&r.operation)
            .bind(r.payload.to_string())
            .execute(&mut *tx)
            .await
            .doing("buffer a changed row")?;
        }
        if let Some(through) = &commit.archived_through {
            sqlx::query(
                "INSERT INTO ferry_tier_watermarks (migration_id, tenant_id, archived_through)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (migration_id, tenant_id) DO UPDATE SET archived_through = excluded.archived_through",
            )
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .bind(through)
            .execute(&mut *tx)
            .await
            .doing("move the archive watermark")?;
        }
        tx.commit().await.doing("commit segments")?;
        Ok(())
    }

    async fn segments(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<SegmentRecord>> {
        let sql = format!(
            "SELECT {} FROM ferry_segments
             WHERE migration_id = $1 AND tenant_id = $2 AND state = 'live' ORDER BY segment_id",
            rows::SEGMENT_COLUMNS
        );
        let found: Vec<rows::SegmentRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .doing("read the segment manifest")?;
        found.into_iter().map(rows::segment).collect()
    }

    async fn garbage_segments(
        &self,
        migration: &MigrationId,
        stale: Duration,
    ) -> Result<Vec<SegmentRecord>> {
        let sql = format!(
            "SELECT {} FROM ferry_segments
             WHERE migration_id = $1 AND (state = 'retired'
                 OR (state = 'pending' AND created_at < now() - make_interval(secs => $2)))
             ORDER BY segment_id",
            rows::SEGMENT_COLUMNS
        );
        let found: Vec<rows::SegmentRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(migration.as_str())
            .bind(stale.as_secs_f64())
            .fetch_all(&self.pool)
            .await
            .doing("find garbage segments")?;
        found.into_iter().map(rows::segment).collect()
    }

    async fn forget_segment(&self, id: i64) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM ferry_segments WHERE segment_id = $1 AND state <> 'live'")
                .bind(id)
                .execute(&self.pool)
                .await
                .doing("forget a segment")?;
        Ok(done.rows_affected() > 0)
    }

    async fn archived_through(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT archived_through FROM ferry_tier_watermarks WHERE migration_id = $1 AND tenant_id = $2",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await
        .doing("read the archive watermark")
    }
}

#[async_trait]
impl ManifestStore for SqliteStore {
    async fn reserve_segment(&self, migration: &MigrationId, tenant: &TenantId) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO ferry_segments (migration_id, tenant_id, created_at) VALUES (?1, ?2, ?3)
             RETURNING segment_id",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .bind(sqlite::now_ms())
        .fetch_one(&self.pool)
        .await
        .doing("reserve a segment id")
    }

    async fn commit_segments(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        commit: &SegmentCommit,
    ) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing("begin a segment commit")?;
        let retired = sqlx::query(
            "UPDATE ferry_segments SET state = 'retired', retired_at = ?4
             WHERE segment_id IN (SELECT value FROM json_each(?1)) AND migration_id = ?2
                 AND tenant_id = ?3 AND state = 'live'",
        )
        .bind(serde_json::Value::from(commit.retire.clone()).to_string())
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .bind(sqlite::now_ms())
        .execute(&mut *tx)
        .await
        .doing("retire segments")?;
        check_retired(retired.rows_affected(), migration, tenant, commit)?;
        for seg in &commit.add {
            let added = sqlx::query(
                "UPDATE ferry_segments SET state = 'live', path = ?2, row_count = ?3, min_key = ?4,
                     max_key = ?5, checksum = ?6
                 WHERE segment_id = ?1 AND migration_id = ?7 AND tenant_id = ?8 AND state = 'pending'",
            )
            .bind(seg.id)
            .bind(&seg.path)
            .bind(i64::try_from(seg.rows).unwrap_or(i64::MAX))
            .bind(&seg.min_key)
            .bind(&seg.max_key)
            .bind(&seg.checksum)
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .doing("add a segment")?;
            check_added(added.rows_affected(), migration, tenant, seg.id)?;
        }
        sqlx::query(
            "UPDATE ferry_update_buffer SET state = 'applied'
             WHERE seq IN (SELECT value FROM json_each(?1))",
        )
        .bind(serde_json::Value::from(commit.applied.clone()).to_string())
        .execute(&mut *tx)
        .await
        .doing("mark buffered updates applied")?;
        let now = sqlite::now_ms();
        for r in &commit.requeue {
            sqlx::query(
                "INSERT INTO ferry_update_buffer (migration_id, tenant_id, entity_key, operation, payload, enqueued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .bind(&r.key)
            .bind(&r.operation)
            .bind(r.payload.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await
            .doing("buffer a changed row")?;
        }
        if let Some(through) = &commit.archived_through {
            sqlx::query(
                "INSERT INTO ferry_tier_watermarks (migration_id, tenant_id, archived_through)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (migration_id, tenant_id) DO UPDATE SET archived_through = excluded.archived_through",
            )
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .bind(through)
            .execute(&mut *tx)
            .await
            .doing("move the archive watermark")?;
        }
        tx.commit().await.doing("commit segments")?;
        Ok(())
    }

    async fn segments(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<SegmentRecord>> {
        let sql = format!(
            "SELECT {} FROM ferry_segments
             WHERE migration_id = ?1 AND tenant_id = ?2 AND state = 'live' ORDER BY segment_id",
            rows::SEGMENT_COLUMNS
        );
        let found: Vec<rows::SegmentRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .doing("read the segment manifest")?;
        found.into_iter().map(rows::segment).collect()
    }

    async fn garbage_segments(
        &self,
        migration: &MigrationId,
        stale: Duration,
    ) -> Result<Vec<SegmentRecord>> {
        let sql = format!(
            "SELECT {} FROM ferry_segments
             WHERE migration_id = ?1 AND (state = 'retired' OR (state = 'pending' AND created_at < ?2))
             ORDER BY segment_id",
            rows::SEGMENT_COLUMNS
        );
        let cutoff = sqlite::now_ms() - i64::try_from(stale.as_millis()).unwrap_or(i64::MAX);
        let found: Vec<rows::SegmentRow> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(migration.as_str())
            .bind(cutoff)
            .fetch_all(&self.pool)
            .await
            .doing("find garbage segments")?;
        found.into_iter().map(rows::segment).collect()
    }

    async fn forget_segment(&self, id: i64) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM ferry_segments WHERE segment_id = ?1 AND state <> 'live'")
                .bind(id)
                .execute(&self.pool)
                .await
                .doing("forget a segment")?;
        Ok(done.rows_affected() > 0)
    }

    async fn archived_through(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Option<String>> {
        sqlx::query_scalar(
            "SELECT archived_through FROM ferry_tier_watermarks WHERE migration_id = ?1 AND tenant_id = ?2",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await
        .doing("read the archive watermark")
    }
}
