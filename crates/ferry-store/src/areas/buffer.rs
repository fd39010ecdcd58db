//! The update buffer's rows: changes that could not reach one side of a migration yet,
//! parked in order until a worker applies them.
//!
//! A change is `pending` until applied; a worker's failed attempts are counted, and a change
//! reaching the limit becomes `dead`, parked until an operator retries or drops it. Pending and
//! dead changes both count towards the buffer's depth, which holds back the transition guards.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_domain::{MigrationId, TenantId};
use sqlx::AssertSqlSafe;

use crate::error::{QueryContext, Result};
use crate::model::BufferedUpdate;
use crate::pg::PgStore;
use crate::rows;
use crate::sqlite::{self, SqliteStore};

/// The update buffer.
#[async_trait]
pub trait BufferStore {
    /// Parks a change for the update buffer; returns its sequence number.
    async fn enqueue_update(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        key: &str,
        operation: &str,
        payload: &serde_json::Value,
    ) -> Result<i64>;
    /// Marks a buffered change applied, so it no longer counts towards the buffer's depth.
    async fn mark_update_applied(&self, seq: i64) -> Result<()>;
    /// A tenant's pending and dead buffered changes, in sequence order: reads merge both (a
    /// dead change was acknowledged all the same); workers apply only pending ones, and none
    /// for a key with a dead change before it.
    async fn pending_updates(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<BufferedUpdate>>;
    /// Pending and dead changes of a migration, oldest first (`ferry buffer list`).
    async fn open_updates(&self, migration: &MigrationId) -> Result<Vec<BufferedUpdate>>;
    /// Counts a failed attempt at applying `seqs`; those reaching `dead_after` attempts
    /// become `dead` (parked until an operator retries or drops them).
    async fn record_update_failure(&self, seqs: &[i64], error: &str, dead_after: i32)
    -> Result<()>;
    /// A dead change back to pending with its attempts reset. False if it was not dead.
    async fn retry_update(&self, seq: i64) -> Result<bool>;
    /// Gives up on a pending or dead change: it is marked applied without being applied, and
    /// `note` (who and why) kept on it. False if it was neither.
    async fn drop_update(&self, seq: i64, note: &str) -> Result<bool>;
}

#[async_trait]
impl BufferStore for PgStore {
    async fn enqueue_update(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        key: &str,
        operation: &str,
        payload: &serde_json::Value,
    ) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO ferry_update_buffer (migration_id, tenant_id, entity_key, operation, payload)
             VALUES ($1, $2, $3, $4, $5) RETURNING seq",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .bind(key)
        .bind(operation)
        .bind(payload.to_string())
        .fetch_one(&self.pool)
        .await
        .doing("enqueue buffered update")
    }

    async fn mark_update_applied(&self, seq: i64) -> Result<()> {
        sqlx::query("UPDATE ferry_update_buffer SET state = 'applied' WHERE seq = $1")
            .bind(seq)
            .execute(&self.pool)
            .await
            .doing("mark buffered update applied")?;
        Ok(())
    }

    async fn pending_updates(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<BufferedUpdate>> {
        let sql = format!(
            "SELECT {} FROM ferry_update_buffer
             WHERE migration_id = $1 AND tenant_id = $2 AND state IN ('pending', 'dead') ORDER BY seq",
            rows::UPDATE_COLUMNS
        );
        let found: Vec<rows::UpdateRow<DateTime<Utc>>> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .doing("read pending buffered updates")?;
        found.into_iter().map(|r| rows::update(r, Ok)).collect()
    }

    async fn open_updates(&self, migration: &MigrationId) -> Result<Vec<BufferedUpdate>> {
        let sql = format!(
            "SELECT {} FROM ferry_update_buffer
             WHERE migration_id = $1 AND state <> 'applied' ORDER BY seq",
            rows::UPDATE_COLUMNS
        );
        let found: Vec<rows::UpdateRow<DateTime<Utc>>> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(migration.as_str())
            .fetch_all(&self.pool)
            .await
            .doing("read the update buffer")?;
        found.into_iter().map(|r| rows::update(r, Ok)).collect()
    }

    async fn record_update_failure(
        &self,
        seqs: &[i64],
        error: &str,
        dead_after: i32,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE ferry_update_buffer
             SET attempts = attempts + 1, last_error = $2,
                 state = CASE WHEN attempts + 1 >= $3 THEN 'dead' ELSE state END
             WHERE seq = ANY($1) AND state = 'pending'",
        )
        .bind(seqs)
        .bind(error)
        .bind(dead_after)
        .execute(&self.pool)
        .await
        .doing("record a buffered update's failure")?;
        Ok(())
    }

    async fn retry_update(&self, seq: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ferry_update_buffer SET state = 'pending', attempts = 0 WHERE seq = $1 AND state = 'dead'",
        )
        .bind(seq)
        .execute(&self.pool)
        .await
        .doing("retry a dead buffered update")?;
        Ok(done.rows_affected() == 1)
    }

    async fn drop_update(&self, seq: i64, note: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ferry_update_buffer SET state = 'applied', last_error = $2
             WHERE seq = $1 AND state IN ('pending', 'dead')",
        )
        .bind(seq)
        .bind(note)
        .execute(&self.pool)
        .await
        .doing("drop a buffered update")?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl BufferStore for SqliteStore {
    async fn enqueue_update(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        key: &str,
        operation: &str,
        payload: &serde_json::Value,
    ) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO ferry_update_buffer (migration_id, tenant_id, entity_key, operation, payload, enqueued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING seq",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .bind(key)
        .bind(operation)
        .bind(payload.to_string())
        .bind(sqlite::now_ms())
        .fetch_one(&self.pool)
        .await
        .doing("enqueue buffered update")
    }

    async fn mark_update_applied(&self, seq: i64) -> Result<()> {
        sqlx::query("UPDATE ferry_update_buffer SET state = 'applied' WHERE seq = ?1")
            .bind(seq)
            .execute(&self.pool)
            .await
            .doing("mark buffered update applied")?;
        Ok(())
    }

    async fn pending_updates(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<BufferedUpdate>> {
        let sql = format!(
            "SELECT {} FROM ferry_update_buffer
             WHERE migration_id = ?1 AND tenant_id = ?2 AND state IN ('pending', 'dead') ORDER BY seq",
            rows::UPDATE_COLUMNS
        );
        let found: Vec<rows::UpdateRow<i64>> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(migration.as_str())
            .bind(tenant.as_str())
            .fetch_all(&self.pool)
            .await
            .doing("read pending buffered updates")?;
        found
            .into_iter()
            .map(|r| rows::update(r, rows::from_millis))
            .collect()
    }

    async fn open_updates(&self, migration: &MigrationId) -> Result<Vec<BufferedUpdate>> {
        let sql = format!(
            "SELECT {} FROM ferry_update_buffer
             WHERE migration_id = ?1 AND state <> 'applied' ORDER BY seq",
            rows::UPDATE_COLUMNS
        );
        let found: Vec<rows::UpdateRow<i64>> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(migration.as_str())
            .fetch_all(&self.pool)
            .await
            .doing("read the update buffer")?;
        found
            .into_iter()
            .map(|r| rows::update(r, rows::from_millis))
            .collect()
    }

    async fn record_update_failure(
        &self,
        seqs: &[i64],
        error: &str,
        dead_after: i32,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE ferry_update_buffer
             SET attempts = attempts + 1, last_error = ?2,
                 state = CASE WHEN attempts + 1 >= ?3 THEN 'dead' ELSE state END
             WHERE seq IN (SELECT value FROM json_each(?1)) AND state = 'pending'",
        )
        .bind(serde_json::Value::from(seqs.to_vec()).to_string())
        .bind(error)
        .bind(dead_after)
        .execute(&self.pool)
        .await
        .doing("record a buffered update's failure")?;
        Ok(())
    }

    async fn retry_update(&self, seq: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ferry_update_buffer SET state = 'pending', attempts = 0 WHERE seq = ?1 AND state = 'dead'",
        )
        .bind(seq)
        .execute(&self.pool)
        .await
        .doing("retry a dead buffered update")?;
        Ok(done.rows_affected() == 1)
    }

    async fn drop_update(&self, seq: i64, note: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ferry_update_buffer SET state = 'applied', last_error = ?2
             WHERE seq = ?1 AND state IN ('pending', 'dead')",
        )
        .bind(seq)
        .bind(note)
        .execute(&self.pool)
        .await
        .doing("drop a buffered update")?;
        Ok(done.rows_affected() == 1)
    }
}
