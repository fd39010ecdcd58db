//! Reading the audit log: one tenant's history, a migration's log in pages, and its newest
//! entries. Entries are only ever written by [`crate::PhaseStore::apply_changes`], in the
//! transaction of the change they record; triggers in both schemas refuse updates and deletes.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_domain::{MigrationId, TenantId};

use crate::MigrationStore;
use crate::error::{QueryContext, Result};
use crate::model::AuditEntry;
use crate::pg::{self, PgStore};
use crate::rows::{self, audit_columns};
use crate::sqlite::SqliteStore;

/// The audit log, read back.
#[async_trait]
pub trait AuditStore {
    async fn history(&self, migration: &MigrationId, tenant: &TenantId) -> Result<Vec<AuditEntry>>;
    /// Audit entries of a migration in order, from `after_seq` (exclusive).
    async fn audit_log(
        &self,
        migration: &MigrationId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditEntry>>;
    /// The `limit` most recent audit entries of a migration, oldest first.
    async fn recent_audit(&self, migration: &MigrationId, limit: u64) -> Result<Vec<AuditEntry>>;
}

#[async_trait]
impl AuditStore for PgStore {
    async fn history(&self, migration: &MigrationId, tenant: &TenantId) -> Result<Vec<AuditEntry>> {
        self.tenant(migration, tenant).await?;
        let rows: Vec<rows::AuditRow<DateTime<Utc>>> = sqlx::query_as(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM ferry_audit_log WHERE migration_id = $1 AND tenant_id = $2 ORDER BY seq"
        ))
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .doing("read tenant history")?;
        rows.into_iter()
            .map(|r| rows::audit_entry(r, pg::ok))
            .collect()
    }

    async fn audit_log(
        &self,
        migration: &MigrationId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditEntry>> {
        let rows: Vec<rows::AuditRow<DateTime<Utc>>> = sqlx::query_as(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM ferry_audit_log WHERE migration_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(migration.as_str())
        .bind(after_seq)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .doing("read audit log")?;
        rows.into_iter()
            .map(|r| rows::audit_entry(r, pg::ok))
            .collect()
    }

    async fn recent_audit(&self, migration: &MigrationId, limit: u64) -> Result<Vec<AuditEntry>> {
        let rows: Vec<rows::AuditRow<DateTime<Utc>>> = sqlx::query_as(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM ferry_audit_log WHERE migration_id = $1 ORDER BY seq DESC LIMIT $2"
        ))
        .bind(migration.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .doing("read the recent audit log")?;
        let mut entries = rows
            .into_iter()
            .map(|r| rows::audit_entry(r, pg::ok))
            .collect::<Result<Vec<_>>>()?;
        entries.reverse();
        Ok(entries)
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn history(&self, migration: &MigrationId, tenant: &TenantId) -> Result<Vec<AuditEntry>> {
        self.tenant(migration, tenant).await?;
        let rows: Vec<rows::AuditRow<i64>> = sqlx::query_as(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM ferry_audit_log WHERE migration_id = ?1 AND tenant_id = ?2 ORDER BY seq"
        ))
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await
        .doing("read tenant history")?;
        rows.into_iter()
            .map(|r| rows::audit_entry(r, rows::from_millis))
            .collect()
    }

    async fn audit_log(
        &self,
        migration: &MigrationId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditEntry>> {
        let rows: Vec<rows::AuditRow<i64>> = sqlx::query_as(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM ferry_audit_log WHERE migration_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
        ))
        .bind(migration.as_str())
        .bind(after_seq)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .doing("read audit log")?;
        rows.into_iter()
            .map(|r| rows::audit_entry(r, rows::from_millis))
            .collect()
    }

    async fn recent_audit(&self, migration: &MigrationId, limit: u64) -> Result<Vec<AuditEntry>> {
        let rows: Vec<rows::AuditRow<i64>> = sqlx::query_as(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM ferry_audit_log WHERE migration_id = ?1 ORDER BY seq DESC LIMIT ?2"
        ))
        .bind(migration.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .doing("read the recent audit log")?;
        let mut entries = rows
            .into_iter()
            .map(|r| rows::audit_entry(r, rows::from_millis))
            .collect::<Result<Vec<_>>>()?;
        entries.reverse();
        Ok(entries)
    }
}
