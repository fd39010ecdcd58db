//! A migration's health in two sums: its update buffer (pending, dead, retrying, attempts,
//! oldest pending change) and its validation mismatches (open, total).
//!
//! `ferry status`, the dashboard and `/metrics` read these when asked instead of keeping
//! gauges in a process, so every reader sees the same figures; one query per table keeps
//! that affordable.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_domain::MigrationId;

use crate::error::{QueryContext, Result};
use crate::model::MigrationHealth;
use crate::pg::PgStore;
use crate::rows;
use crate::sqlite::SqliteStore;

/// The update buffer and validation of a migration, summed.
#[async_trait]
pub trait HealthStore {
    /// The update buffer and validation of a migration, summed (for metrics and status).
    async fn migration_health(&self, migration: &MigrationId) -> Result<MigrationHealth>;
}

/// `(pending, dead, retrying, attempts, oldest pending)` with the dialect's timestamp.
type BufferSums<T> = (i64, i64, i64, i64, Option<T>);

fn health<T>(
    (pending, dead, retrying, attempts, oldest): BufferSums<T>,
    (open, total): (i64, i64),
    at: impl FnOnce(T) -> Result<DateTime<Utc>>,
) -> Result<MigrationHealth> {
    Ok(MigrationHealth {
        buffer_pending: rows::count(pending)?,
        buffer_dead: rows::count(dead)?,
        buffer_retrying: rows::count(retrying)?,
        buffer_attempts: rows::count(attempts)?,
        buffer_oldest_pending_at: oldest.map(at).transpose()?,
        mismatches_open: rows::count(open)?,
        mismatches_total: rows::count(total)?,
    })
}

#[async_trait]
impl HealthStore for PgStore {
    async fn migration_health(&self, migration: &MigrationId) -> Result<MigrationHealth> {
        let buffer: BufferSums<DateTime<Utc>> = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'pending'),
                        count(*) FILTER (WHERE state = 'dead'),
                        count(*) FILTER (WHERE state = 'pending' AND attempts > 0),
                        coalesce(sum(attempts), 0)::bigint,
                        min(enqueued_at) FILTER (WHERE state = 'pending')
                 FROM ferry_update_buffer WHERE migration_id = $1 AND state <> 'applied'",
        )
        .bind(migration.as_str())
        .fetch_one(&self.pool)
        .await
        .doing("sum the update buffer")?;
        let mismatches = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE resolved_at IS NULL), count(*)
             FROM ferry_mismatches WHERE migration_id = $1",
        )
        .bind(migration.as_str())
        .fetch_one(&self.pool)
        .await
        .doing("count mismatches")?;
        health(buffer, mismatches, Ok)
    }
}

#[async_trait]
impl HealthStore for SqliteStore {
    async fn migration_health(&self, migration: &MigrationId) -> Result<MigrationHealth> {
        let buffer: BufferSums<i64> = sqlx::query_as(
            "SELECT coalesce(sum(state = 'pending'), 0),
                        coalesce(sum(state = 'dead'), 0),
                        coalesce(sum(state = 'pending' AND attempts > 0), 0),
                        coalesce(sum(attempts), 0),
                        min(CASE WHEN state = 'pending' THEN enqueued_at END)
                 FROM ferry_update_buffer WHERE migration_id = ?1 AND state <> 'applied'",
        )
        .bind(migration.as_str())
        .fetch_one(&self.pool)
        .await
        .doing("sum the update buffer")?;
        let mismatches = sqlx::query_as(
            "SELECT coalesce(sum(resolved_at IS NULL), 0), count(*)
             FROM ferry_mismatches WHERE migration_id = ?1",
        )
        .bind(migration.as_str())
        .fetch_one(&self.pool)
        .await
        .doing("count mismatches")?;
        health(buffer, mismatches, rows::from_millis)
    }
}
