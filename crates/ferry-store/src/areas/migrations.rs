//! Migrations and the tenants registered to them, and the cohorts a rollout selects.
//!
//! Registering is an upsert, so a tenant file can be loaded again to refresh row counts; each
//! tenant's cohort bucket is computed here once, so a percentage cohort is an index range.
//! PostgreSQL takes a batch as arrays unpacked with `unnest`, SQLite as one JSON array
//! unpacked with `json_each`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_domain::{Cohort, MigrationId, TenantId, hash_bucket};
use serde_json::json;

use crate::error::{QueryContext, Result, StoreError};
use crate::model::{Migration, NewMigration, TenantQuery, TenantRecord, TenantSize};
use crate::pg::{self, PgStore};
use crate::rows::{self, tenant_columns};
use crate::sqlite::{self, SqliteStore};

/// Migrations, their tenants and cohorts.
#[async_trait]
pub trait MigrationStore {
    async fn create_migration(&self, new: &NewMigration) -> Result<Migration>;
    async fn migration(&self, id: &MigrationId) -> Result<Migration>;
    async fn migrations(&self) -> Result<Vec<Migration>>;

    /// Adds tenants (in `legacy`) or updates the row counts of known ones. Returns how many
    /// were new. Fails without writing anything if the migration does not exist.
    async fn register_tenants(
        &self,
        migration: &MigrationId,
        tenants: &[TenantSize],
    ) -> Result<u64>;
    async fn tenant(&self, migration: &MigrationId, tenant: &TenantId) -> Result<TenantRecord>;
    async fn tenants(
        &self,
        migration: &MigrationId,
        query: &TenantQuery,
    ) -> Result<Vec<TenantRecord>>;
    /// The registered tenants a cohort names. Explicitly listed tenants that are not
    /// registered are simply absent; the caller reports them.
    async fn cohort(&self, migration: &MigrationId, cohort: &Cohort) -> Result<Vec<TenantRecord>>;
}

/// The tenants of a registration with duplicates removed, the last occurrence winning, as if
/// each line of a tenant file were applied in turn. (A single PostgreSQL upsert cannot touch a
/// row twice, so duplicates must not reach it.)
fn last_occurrences(tenants: &[TenantSize]) -> Vec<&TenantSize> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&TenantSize> = tenants
        .iter()
        .rev()
        .filter(|t| seen.insert(&t.tenant))
        .collect();
    out.reverse();
    out
}

#[async_trait]
impl MigrationStore for PgStore {
    async fn create_migration(&self, new: &NewMigration) -> Result<Migration> {
        let row: Option<rows::MigrationRow<DateTime<Utc>>> = sqlx::query_as(
            "INSERT INTO ferry_migrations (migration_id, kind, description, config, created_by)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (migration_id) DO NOTHING
             RETURNING migration_id, kind, description, config, created_by, created_at",
        )
        .bind(new.id.as_str())
        .bind(new.kind.as_str())
        .bind(&new.description)
        .bind(new.config.to_string())
        .bind(&new.created_by)
        .fetch_optional(&self.pool)
        .await
        .doing("create migration")?;
        match row {
            Some(row) => rows::migration(row, pg::ok),
            None => Err(StoreError::MigrationExists(new.id.clone())),
        }
    }

    async fn migration(&self, id: &MigrationId) -> Result<Migration> {
        let row: Option<rows::MigrationRow<DateTime<Utc>>> = sqlx::query_as(
            "SELECT migration_id, kind, description, config, created_by, created_at
             FROM ferry_migrations WHERE migration_id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .doing("read migration")?;
        match row {
            Some(row) => rows::migration(row, pg::ok),
            None => Err(StoreError::MigrationNotFound(id.clone())),
        }
    }

    async fn migrations(&self) -> Result<Vec<Migration>> {
        let rows: Vec<rows::MigrationRow<DateTime<Utc>>> = sqlx::query_as(
            "SELECT migration_id, kind, description, config, created_by, created_at
             FROM ferry_migrations ORDER BY migration_id",
        )
        .fetch_all(&self.pool)
        .await
        .doing("list migrations")?;
        rows.into_iter()
            .map(|r| rows::migration(r, pg::ok))
            .collect()
    }

    async fn register_tenants(
        &self,
        migration: &MigrationId,
        tenants: &[TenantSize],
    ) -> Result<u64> {
        self.migration(migration).await?;
        let tenants = last_occurrences(tenants);
        let ids: Vec<&str> = tenants.iter().map(|t| t.tenant.as_str()).collect();
        let sizes: Vec<i64> = tenants
            .iter()
            .map(|t| i64::try_from(t.rows).unwrap_or(i64::MAX))
            .collect();
        let buckets: Vec<i64> = tenants
            .iter()
            .map(|t| i64::from(hash_bucket(migration, &t.tenant)))
            .collect();
        // `xmax = 0` is true only for rows this statement inserted, not for ones it updated.
        let inserted: i64 = sqlx::query_scalar(
            "WITH upserted AS (
                 INSERT INTO ferry_tenant_phases (migration_id, tenant_id, phase, row_count, cohort_bucket)
                 SELECT $1, t.tenant_id, 'legacy', t.row_count, t.bucket
                 FROM unnest($2::text[], $3::bigint[], $4::bigint[]) AS t(tenant_id, row_count, bucket)
                 ON CONFLICT (migration_id, tenant_id) DO UPDATE SET row_count = excluded.row_count
                 RETURNING (xmax = 0) AS inserted
             )
             SELECT count(*) FILTER (WHERE inserted) FROM upserted",
        )
        .bind(migration.as_str())
        .bind(&ids)
        .bind(&sizes)
        .bind(&buckets)
        .fetch_one(&self.pool)
        .await
        .doing("register tenants")?;
        rows::count(inserted)
    }

    async fn tenant(&self, migration: &MigrationId, tenant: &TenantId) -> Result<TenantRecord> {
        let row: Option<rows::TenantRow<DateTime<Utc>>> = sqlx::query_as(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM ferry_tenant_phases WHERE migration_id = $1 AND tenant_id = $2"
        ))
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await
        .doing("read tenant")?;
        match row {
            Some(row) => rows::tenant_record(row, pg::ok),
            None => {
                self.migration(migration).await?;
                Err(StoreError::TenantNotFound {
                    migration: migration.clone(),
                    tenant: tenant.clone(),
                })
            }
        }
    }

    async fn tenants(
        &self,
        migration: &MigrationId,
        query: &TenantQuery,
    ) -> Result<Vec<TenantRecord>> {
        let phase = query.phase.map(|p| p.as_str().to_owned());
        let after = query.after.as_ref().map(|t| t.as_str().to_owned());
        let limit = query
            .limit
            .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let paused = query.paused;
        let rows: Vec<pg::PgTenantRow> = sqlx::query_as(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM ferry_tenant_phases WHERE migration_id = $1
              AND ($2::text IS NULL OR phase = $2)
              AND ($3::bool IS NULL OR paused = $3)
              AND ($4::text IS NULL OR tenant_id > $4)
              ORDER BY tenant_id LIMIT $5"
        ))
        .bind(migration.as_str())
        .bind(phase)
        .bind(paused)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing("list tenants")?;
        pg::decode_tenants(rows)
    }

    async fn cohort(&self, migration: &MigrationId, cohort: &Cohort) -> Result<Vec<TenantRecord>> {
        let m = migration.as_str();
        let query = match cohort {
            Cohort::Explicit(ids) => sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases
                  WHERE migration_id = $1 AND tenant_id = ANY($2) ORDER BY tenant_id"
            ))
            .bind(m)
            .bind(ids.iter().map(|t| t.as_str()).collect::<Vec<_>>()),
            Cohort::Percent(p) => sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases
                  WHERE migration_id = $1 AND cohort_bucket < $2 ORDER BY tenant_id"
            ))
            .bind(m)
            .bind(i64::from(p.basis_points())),
            Cohort::SmallestFirst(n) => sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases
                  WHERE migration_id = $1 ORDER BY row_count, tenant_id LIMIT $2"
            ))
            .bind(m)
            .bind(i64::try_from(*n).unwrap_or(i64::MAX)),
            Cohort::All => sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases WHERE migration_id = $1 ORDER BY tenant_id"
            ))
            .bind(m),
        };
        let rows: Vec<pg::PgTenantRow> =
            query.fetch_all(&self.pool).await.doing("select cohort")?;
        pg::decode_tenants(rows)
    }
}

#[async_trait]
impl MigrationStore for SqliteStore {
    async fn create_migration(&self, new: &NewMigration) -> Result<Migration> {
        let row: Option<rows::MigrationRow<i64>> = sqlx::query_as(
            "INSERT INTO ferry_migrations (migration_id, kind, description, config, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (migration_id) DO NOTHING
             RETURNING migration_id, kind, description, config, created_by, created_at",
        )
        .bind(new.id.as_str())
        .bind(new.kind.as_str())
        .bind(&new.description)
        .bind(new.config.to_string())
        .bind(&new.created_by)
        .bind(sqlite::now_ms())
        .fetch_optional(&self.pool)
        .await
        .doing("create migration")?;
        match row {
            Some(row) => rows::migration(row, rows::from_millis),
            None => Err(StoreError::MigrationExists(new.id.clone())),
        }
    }

    async fn migration(&self, id: &MigrationId) -> Result<Migration> {
        let row: Option<rows::MigrationRow<i64>> = sqlx::query_as(
            "SELECT migration_id, kind, description, config, created_by, created_at
             FROM ferry_migrations WHERE migration_id = ?1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .doing("read migration")?;
        match row {
            Some(row) => rows::migration(row, rows::from_millis),
            None => Err(StoreError::MigrationNotFound(id.clone())),
        }
    }

    async fn migrations(&self) -> Result<Vec<Migration>> {
        let rows: Vec<rows::MigrationRow<i64>> = sqlx::query_as(
            "SELECT migration_id, kind, description, config, created_by, created_at
             FROM ferry_migrations ORDER BY migration_id",
        )
        .fetch_all(&self.pool)
        .await
        .doing("list migrations")?;
        rows.into_iter()
            .map(|r| rows::migration(r, rows::from_millis))
            .collect()
    }

    async fn register_tenants(
        &self,
        migration: &MigrationId,
        tenants: &[TenantSize],
    ) -> Result<u64> {
        self.migration(migration).await?;
        let batch = serde_json::Value::from(
            last_occurrences(tenants)
                .into_iter()
                .map(|t| {
                    json!([
                        t.tenant.as_str(),
                        i64::try_from(t.rows).unwrap_or(i64::MAX),
                        hash_bucket(migration, &t.tenant)
                    ])
                })
                .collect::<Vec<_>>(),
        )
        .to_string();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing("begin tenant registration")?;
        let count = "SELECT count(*) FROM ferry_tenant_phases WHERE migration_id = ?1";
        let before: i64 = sqlx::query_scalar(count)
            .bind(migration.as_str())
            .fetch_one(&mut *tx)
            .await
            .doing("count tenants")?;
        // `WHERE true` disambiguates an upsert's SELECT from a join constraint in SQLite.
        sqlx::query(
            "INSERT INTO ferry_tenant_phases (migration_id, tenant_id, phase, row_count, cohort_bucket, updated_at)
             SELECT ?1, json_extract(value, '$[0]'), 'legacy', json_extract(value, '$[1]'),
                    json_extract(value, '$[2]'), ?3
             FROM json_each(?2) WHERE true
             ON CONFLICT (migration_id, tenant_id) DO UPDATE SET row_count = excluded.row_count",
        )
        .bind(migration.as_str())
        .bind(batch)
        .bind(sqlite::now_ms())
        .execute(&mut *tx)
        .await
        .doing("register tenants")?;
        let after: i64 = sqlx::query_scalar(count)
            .bind(migration.as_str())
            .fetch_one(&mut *tx)
            .await
            .doing("count tenants")?;
        tx.commit().await.doing("commit tenant registration")?;
        rows::count(after - before)
    }

    async fn tenant(&self, migration: &MigrationId, tenant: &TenantId) -> Result<TenantRecord> {
        let row: Option<sqlite::SqliteTenantRow> = sqlx::query_as(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM ferry_tenant_phases WHERE migration_id = ?1 AND tenant_id = ?2"
        ))
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await
        .doing("read tenant")?;
        match row {
            Some(row) => rows::tenant_record(row, rows::from_millis),
            None => {
                self.migration(migration).await?;
                Err(StoreError::TenantNotFound {
                    migration: migration.clone(),
                    tenant: tenant.clone(),
                })
            }
        }
    }

    async fn tenants(
        &self,
        migration: &MigrationId,
        query: &TenantQuery,
    ) -> Result<Vec<TenantRecord>> {
        let rows: Vec<sqlite::SqliteTenantRow> = sqlx::query_as(concat!(
            "SELECT ",
            tenant_columns!(),
            " FROM ferry_tenant_phases WHERE migration_id = ?1
              AND (?2 IS NULL OR phase = ?2)
              AND (?3 IS NULL OR paused = ?3)
              AND (?4 IS NULL OR tenant_id > ?4)
              ORDER BY tenant_id LIMIT ?5"
        ))
        .bind(migration.as_str())
        .bind(query.phase.map(|p| p.as_str()))
        .bind(query.paused)
        .bind(query.after.as_ref().map(|t| t.as_str()))
        .bind(
            query
                .limit
                .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX)),
        )
        .fetch_all(&self.pool)
        .await
        .doing("list tenants")?;
        sqlite::decode_tenants(rows)
    }

    async fn cohort(&self, migration: &MigrationId, cohort: &Cohort) -> Result<Vec<TenantRecord>> {
        let m = migration.as_str();
        let query = match cohort {
            Cohort::Explicit(ids) => sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases WHERE migration_id = ?1
                  AND tenant_id IN (SELECT value FROM json_each(?2)) ORDER BY tenant_id"
            ))
            .bind(m)
            .bind(sqlite::json_ids(ids.iter().map(|t| t.as_str()))),
            Cohort::Percent(p) => sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases
                  WHERE migration_id = ?1 AND cohort_bucket < ?2 ORDER BY tenant_id"
            ))
            .bind(m)
            .bind(i64::from(p.basis_points())),
            Cohort::SmallestFirst(n) => sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases
                  WHERE migration_id = ?1 ORDER BY row_count, tenant_id LIMIT ?2"
            ))
            .bind(m)
            .bind(i64::try_from(*n).unwrap_or(i64::MAX)),
            Cohort::All => sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases WHERE migration_id = ?1 ORDER BY tenant_id"
            ))
            .bind(m),
        };
        let rows: Vec<sqlite::SqliteTenantRow> =
            query.fetch_all(&self.pool).await.doing("select cohort")?;
        sqlite::decode_tenants(rows)
    }
}
