//! Validation mismatches: keys whose two copies differed when a copy was validated.
//!
//! A mismatch stays open until a re-check finds both sides equal; open mismatches hold back
//! the transition guards (see [`crate::GuardStore`]) and are re-checked inside a phase
//! change's write when it asks for a clean tenant.

use async_trait::async_trait;
use ferry_domain::{MigrationId, TenantId};

use crate::error::{QueryContext, Result};
use crate::pg::PgStore;
use crate::sqlite::{self, SqliteStore};

/// Validation mismatches.
#[async_trait]
pub trait MismatchStore {
    /// Records a validation mismatch; returns its id.
    async fn record_mismatch(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        key: &str,
        detail: &str,
    ) -> Result<i64>;
    /// Marks a mismatch resolved (a re-check found both sides equal).
    async fn resolve_mismatch(&self, id: i64) -> Result<()>;
    /// Unresolved mismatches of a tenant: `(id, key, detail)`, oldest first.
    async fn open_mismatches(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<(i64, String, String)>>;
}

#[async_trait]
impl MismatchStore for PgStore {
    async fn record_mismatch(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        key: &str,
        detail: &str,
    ) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO ferry_mismatches (migration_id, tenant_id, entity_key, detail)
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .bind(key)
        .bind(detail)
        .fetch_one(&self.pool)
        .await
        .doing("record mismatch")
    }

    async fn resolve_mismatch(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE ferry_mismatches SET resolved_at = now() WHERE id = $1 AND resolved_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .doing("resolve mismatch")?;
        Ok(())
    }

    async fn open_mismatches(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<(i64, String, String)>> {
        sqlx::query_as(
            "SELECT id, entity_key, detail FROM ferry_mismatches
             WHERE migration_id = $1 AND tenant_id = $2 AND resolved_at IS NULL ORDER BY id",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .doing("list open mismatches")
    }
}

#[async_trait]
impl MismatchStore for SqliteStore {
    async fn record_mismatch(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        key: &str,
        detail: &str,
    ) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO ferry_mismatches (migration_id, tenant_id, entity_key, detail, detected_at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .bind(key)
        .bind(detail)
        .bind(sqlite::now_ms())
        .fetch_one(&self.pool)
        .await
        .doing("record mismatch")
    }

    async fn resolve_mismatch(&self, id: i64) -> Result<()> {
        sqlx::query(
            "UPDATE ferry_mismatches SET resolved_at = ?2 WHERE id = ?1 AND resolved_at IS NULL",
        )
        .bind(id)
        .bind(sqlite::now_ms())
        .execute(&self.pool)
        .await
        .doing("resolve mismatch")?;
        Ok(())
    }

    async fn open_mismatches(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<(i64, String, String)>> {
        sqlx::query_as(
            "SELECT id, entity_key, detail FROM ferry_mismatches
             WHERE migration_id = ?1 AND tenant_id = ?2 AND resolved_at IS NULL ORDER BY id",
        )
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .doing("list open mismatches")
    }
}
