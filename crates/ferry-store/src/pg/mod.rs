//! The PostgreSQL control store, for production.
//!
//! All tables live in one schema (default `ferry`), selected through the connection's
//! `search_path`, so statements are static text and several independent stores can share a
//! database. Phase changes notify `ferry_changes_<schema>` in the committing transaction;
//! [`crate::RouterStore::change_feed`] listens on it.
//!
//! This module connects and upgrades the schema; the statements live by area in `areas/`,
//! next to their SQLite versions.

mod schema;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_domain::SqlIdent;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};
use sqlx::{ConnectOptions as _, Connection};

use crate::error::{QueryContext, Result, StoreError, redact_url};
use crate::model::TenantRecord;
use crate::rows;
use crate::{ControlStore, SCHEMA_VERSION, StoreKind};

/// Statements slower than this are logged at info level (`ferry -v` shows them).
pub const SLOW_STATEMENT: Duration = Duration::from_secs(1);

pub struct PgStore {
    pub(crate) pool: PgPool,
    schema: SqlIdent,
    pub(crate) channel: String,
    description: String,
}

pub(crate) fn ok<T>(v: T) -> Result<T> {
    Ok(v)
}

impl PgStore {
    /// Connects, creates the schema if needed and upgrades it to [`SCHEMA_VERSION`].
    pub async fn connect(url: &str, schema: &SqlIdent, timeout: Duration) -> Result<PgStore> {
        let redacted = redact_url(url);
        // The schema reaches `search_path` unquoted (where PostgreSQL folds case) and names the
        // NOTIFY channel (63 bytes at most), so it is held to lowercase and 40 bytes.
        let name = schema.as_str();
        if name.len() > 40
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(StoreError::InvalidRequest(format!(
                "store schema {name:?} must be lowercase letters, digits and '_', at most 40 bytes"
            )));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl {
                url: redacted.clone(),
                why: e.to_string(),
            })?
            .application_name("ferry")
            .options([("search_path", schema.as_str())])
            .log_statements(log::LevelFilter::Trace)
            .log_slow_statements(log::LevelFilter::Info, SLOW_STATEMENT);
        let unreachable = |cause| StoreError::Unreachable {
            url: redacted.clone(),
            cause,
        };
        // One direct connection first: a pool reports only "timed out", while the connection
        // itself says why (refused, unknown host, authentication failed).
        let probe = tokio::time::timeout(timeout, PgConnection::connect_with(&options))
            .await
            .map_err(|_| unreachable(sqlx::Error::PoolTimedOut))?
            .map_err(unreachable)?;
        probe.close().await.map_err(unreachable)?;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        let store = PgStore {
            pool,
            channel: format!("ferry_changes_{}", schema.as_str()),
            description: format!("{redacted} (schema {schema})"),
            schema: schema.clone(),
        };
        store.upgrade_schema().await?;
        Ok(store)
    }

    /// The pool, for callers that keep their own tables next to the store (tests, benches).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn upgrade_schema(&self) -> Result<()> {
        // The common case, an up-to-date store, needs no DDL and so no CREATE privilege.
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('ferry_meta') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .doing("look for ferry_meta")?;
        let current: Option<i64> = if exists {
            sqlx::query_scalar("SELECT max(value) FROM ferry_meta WHERE key = 'schema_version'")
                .fetch_one(&self.pool)
                .await
                .doing("read schema version")?
        } else {
            None
        };
        match current {
            Some(found) if found > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(found) if found == SCHEMA_VERSION => return Ok(()),
            _ => {}
        }
        let mut tx = self.pool.begin().await.doing("begin schema upgrade")?;
        // Two processes starting at once must not both run the same step.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ferry_schema:' || $1))")
            .bind(self.schema.as_str())
            .execute(&mut *tx)
            .await
            .doing("lock schema upgrade")?;
        let create = format!("CREATE SCHEMA IF NOT EXISTS {}", self.schema.quoted());
        tx.execute(AssertSqlSafe(create))
            .await
            .doing("create schema")?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS ferry_meta (key text PRIMARY KEY, value bigint NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .doing("create ferry_meta")?;
        let found: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(value), 0) FROM ferry_meta WHERE key = 'schema_version'",
        )
        .fetch_one(&mut *tx)
        .await
        .doing("read schema version")?;
        if found > SCHEMA_VERSION {
            // Dropping the transaction rolls it back: nothing is written.
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (index, step) in schema::STEPS.iter().enumerate() {
            let version = i64::try_from(index).expect("few schema steps") + 1;
            if version > found {
                tracing::info!(version, "upgrading control store schema");
                sqlx::raw_sql(*step)
                    .execute(&mut *tx)
                    .await
                    .doing("apply schema step")?;
            }
        }
        sqlx::query(
            "INSERT INTO ferry_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(SCHEMA_VERSION)
        .execute(&mut *tx)
        .await
        .doing("record schema version")?;
        tx.commit().await.doing("commit schema upgrade")
    }

    /// Overwrites the recorded schema version; for testing the too-new refusal.
    pub async fn force_schema_version(&self, version: i64) -> Result<()> {
        sqlx::query("UPDATE ferry_meta SET value = $1 WHERE key = 'schema_version'")
            .bind(version)
            .execute(&self.pool)
            .await
            .doing("force schema version")?;
        Ok(())
    }
}

pub(crate) type PgTenantRow = rows::TenantRow<DateTime<Utc>>;

pub(crate) fn decode_tenants(rows: Vec<PgTenantRow>) -> Result<Vec<TenantRecord>> {
    rows.into_iter()
        .map(|r| rows::tenant_record(r, ok))
        .collect()
}

impl ControlStore for PgStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
