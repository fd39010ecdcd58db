//! The facts the transition guards read, gathered for a batch of tenants at once.
//!
//! A rollout checks thousands of tenants, so each fact is one grouped query over the batch
//! (copy progress, open mismatches, buffer depth) plus one read of the routers, assembled per
//! tenant by [`facts::assemble`]. The guards are read again inside the phase change's own
//! write where it matters (`recheck_clean` in [`crate::PhaseStore::apply_changes`]).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use ferry_domain::{GuardFacts, MigrationId};

use crate::RouterStore;
use crate::error::{QueryContext, Result, StoreError};
use crate::facts::{self, FactRows};
use crate::model::TenantRecord;
use crate::pg::PgStore;
use crate::rows;
use crate::sqlite::{self, SqliteStore};

/// The transition guards' facts.
#[async_trait]
pub trait GuardStore {
    /// The facts the transition guards need, one per given tenant, in the same order.
    async fn guard_facts(
        &self,
        migration: &MigrationId,
        tenants: &[TenantRecord],
        router_lease: Duration,
    ) -> Result<Vec<GuardFacts>>;
}

/// Adds `(tenant, direction, rows_done, rows_total, complete)` rows of copy progress.
fn add_backfill(rows: &mut FactRows, found: Vec<(String, String, i64, i64, bool)>) -> Result<()> {
    for (tenant, direction, done, total, complete) in found {
        let direction = facts::direction(&direction).ok_or_else(|| StoreError::Corrupt {
            what: format!("backfill direction {direction:?}"),
        })?;
        rows.backfill.insert(
            (tenant, direction),
            (rows::count(done)?, rows::count(total)?, complete),
        );
    }
    Ok(())
}

/// Adds `(tenant, count)` rows to one of the per-tenant counts.
fn add_counts(counts: &mut HashMap<String, u64>, found: Vec<(String, i64)>) -> Result<()> {
    for (tenant, n) in found {
        counts.insert(tenant, rows::count(n)?);
    }
    Ok(())
}

#[async_trait]
impl GuardStore for PgStore {
    async fn guard_facts(
        &self,
        migration: &MigrationId,
        tenants: &[TenantRecord],
        router_lease: Duration,
    ) -> Result<Vec<GuardFacts>> {
        let ids: Vec<&str> = tenants.iter().map(|t| t.tenant.as_str()).collect();
        let mut rows = FactRows::default();
        let backfill = sqlx::query_as(
            "SELECT tenant_id, direction, rows_done, rows_total, complete FROM ferry_backfill
             WHERE migration_id = $1 AND tenant_id = ANY($2)",
        )
        .bind(migration.as_str())
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .doing("read backfill progress")?;
        add_backfill(&mut rows, backfill)?;
        let mismatches = sqlx::query_as(
            "SELECT tenant_id, count(*) FROM ferry_mismatches
             WHERE migration_id = $1 AND tenant_id = ANY($2) AND resolved_at IS NULL
             GROUP BY tenant_id",
        )
        .bind(migration.as_str())
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .doing("count open mismatches")?;
        add_counts(&mut rows.mismatches, mismatches)?;
        let buffer = sqlx::query_as(
            "SELECT tenant_id, count(*) FROM ferry_update_buffer
             WHERE migration_id = $1 AND tenant_id = ANY($2) AND state <> 'applied'
             GROUP BY tenant_id",
        )
        .bind(migration.as_str())
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .doing("count buffered updates")?;
        add_counts(&mut rows.buffer, buffer)?;
        let routers = self.routers(router_lease).await?;
        Ok(facts::assemble(tenants, &rows, &routers))
    }
}

#[async_trait]
impl GuardStore for SqliteStore {
    async fn guard_facts(
        &self,
        migration: &MigrationId,
        tenants: &[TenantRecord],
        router_lease: Duration,
    ) -> Result<Vec<GuardFacts>> {
        let ids = sqlite::json_ids(tenants.iter().map(|t| t.tenant.as_str()));
        let mut rows = FactRows::default();
        let backfill = sqlx::query_as(
            "SELECT tenant_id, direction, rows_done, rows_total, complete FROM ferry_backfill
             WHERE migration_id = ?1 AND tenant_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(migration.as_str())
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .doing("read backfill progress")?;
        add_backfill(&mut rows, backfill)?;
        let mismatches = sqlx::query_as(
            "SELECT tenant_id, count(*) FROM ferry_mismatches
             WHERE migration_id = ?1 AND tenant_id IN (SELECT value FROM json_each(?2))
               AND resolved_at IS NULL
             GROUP BY tenant_id",
        )
        .bind(migration.as_str())
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .doing("count open mismatches")?;
        add_counts(&mut rows.mismatches, mismatches)?;
        let buffer = sqlx::query_as(
            "SELECT tenant_id, count(*) FROM ferry_update_buffer
             WHERE migration_id = ?1 AND tenant_id IN (SELECT value FROM json_each(?2))
               AND state <> 'applied'
             GROUP BY tenant_id",
        )
        .bind(migration.as_str())
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .doing("count buffered updates")?;
        add_counts(&mut rows.buffer, buffer)?;
        let routers = self.routers(router_lease).await?;
        Ok(facts::assemble(tenants, &rows, &routers))
    }
}
