//! The embedded SQLite control store: the default, so Ferry runs with no server.
//!
//! Equivalent to the PostgreSQL store statement for statement; batches travel as one JSON
//! array parameter unpacked with `json_each`, where PostgreSQL uses `unnest` over arrays.
//! Writes take the database lock up front (`BEGIN IMMEDIATE`), so concurrent writers queue on
//! the busy timeout instead of failing a lock upgrade half-way. There is no LISTEN/NOTIFY:
//! [`crate::RouterStore::change_feed`] polls the change counter.
//!
//! This module opens the file and upgrades the schema; the statements live by area in
//! `areas/`, next to their PostgreSQL versions.

mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use sqlx::ConnectOptions as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{QueryContext, Result, StoreError};
use crate::model::TenantRecord;
use crate::rows;
use crate::{ControlStore, SCHEMA_VERSION, StoreKind};

pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    path: PathBuf,
}

pub(crate) type SqliteTenantRow = rows::TenantRow<i64>;

pub(crate) fn now_ms() -> i64 {
    rows::to_millis(Utc::now())
}

pub(crate) fn decode_tenants(rows: Vec<SqliteTenantRow>) -> Result<Vec<TenantRecord>> {
    rows.into_iter()
        .map(|r| rows::tenant_record(r, rows::from_millis))
        .collect()
}

pub(crate) fn json_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::from(ids.into_iter().collect::<Vec<_>>()).to_string()
}

impl SqliteStore {
    /// Opens (creating it if `create` and it is missing) and upgrades the store file.
    pub async fn open(path: &Path, create: bool, timeout: Duration) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(timeout)
            .foreign_keys(true)
            .log_statements(log::LevelFilter::Trace)
            .log_slow_statements(log::LevelFilter::Info, crate::pg::SLOW_STATEMENT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(|cause| StoreError::Unreachable {
                url: format!("sqlite://{}", path.display()),
                cause,
            })?;
        let store = SqliteStore {
            pool,
            path: path.to_owned(),
        };
        store.upgrade_schema().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn upgrade_schema(&self) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing("begin schema upgrade")?;
        let has_meta: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'ferry_meta'",
        )
        .fetch_one(&mut *tx)
        .await
        .doing("look for ferry_meta")?;
        let found: i64 = if has_meta == 0 {
            0
        } else {
            sqlx::query_scalar(
                "SELECT coalesce(max(value), 0) FROM ferry_meta WHERE key = 'schema_version'",
            )
            .fetch_one(&mut *tx)
            .await
            .doing("read schema version")?
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION {
            return tx.commit().await.doing("commit schema check");
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS ferry_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .doing("create ferry_meta")?;
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
            "INSERT INTO ferry_meta (key, value) VALUES ('schema_version', ?1)
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
        sqlx::query("UPDATE ferry_meta SET value = ?1 WHERE key = 'schema_version'")
            .bind(version)
            .execute(&self.pool)
            .await
            .doing("force schema version")?;
        Ok(())
    }
}

impl ControlStore for SqliteStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}
