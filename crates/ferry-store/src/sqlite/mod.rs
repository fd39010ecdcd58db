//! The embedded SQLite control store: the default, so Ferry runs with no server.
//!
//! Equivalent to the PostgreSQL store statement for statement; batches travel as one JSON
//! array parameter unpacked with `json_each`, where PostgreSQL uses `unnest` over arrays.
//! Writes take the database lock up front (`BEGIN IMMEDIATE`), so concurrent writers queue on
//! the busy timeout instead of failing a lock upgrade half-way. There is no LISTEN/NOTIFY:
//! [`ControlStore::change_feed`] polls the change counter.

mod schema;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use ferry_domain::RouterId;
use sqlx::ConnectOptions as _;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::watch;

use crate::error::{QueryContext, Result, StoreError};
use crate::feed::ChangeFeed;
use crate::model::*;
use crate::rows::{self, tenant_columns};
use crate::{ControlStore, SCHEMA_VERSION, StoreKind};

/// How often the change feed polls the counter. A read of one row; cheap enough to keep
/// phase changes visible to routers within a tenth of a second.
const FEED_POLL: Duration = Duration::from_millis(100);

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

#[async_trait]
impl ControlStore for SqliteStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    async fn change_version(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT version FROM ferry_change_counter WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .doing("read change counter")
    }

    async fn changes_since(&self, version: i64) -> Result<Vec<TenantRecord>> {
        // A fresh router needs every tenant that is not in plain legacy: one scan. Later it
        // needs only what changed since its version, which the audit log's index answers
        // without an index on the phases table (see schema.rs).
        let rows: Vec<SqliteTenantRow> = if version == 0 {
            sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases WHERE phase <> 'legacy' OR paused"
            ))
            .fetch_all(&self.pool)
            .await
        } else {
            sqlx::query_as(concat!(
                "SELECT ",
                tenant_columns!(),
                " FROM ferry_tenant_phases WHERE (migration_id, tenant_id) IN
                  (SELECT migration_id, tenant_id FROM ferry_audit_log WHERE change_version > ?1)"
            ))
            .bind(version)
            .fetch_all(&self.pool)
            .await
        }
        .doing("read changed phases")?;
        decode_tenants(rows)
    }

    async fn heartbeat(
        &self,
        router: &RouterId,
        description: &str,
        seen_version: i64,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO ferry_routers (router_id, description, seen_version, started_at, heartbeat_at)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (router_id) DO UPDATE
             SET seen_version = max(ferry_routers.seen_version, excluded.seen_version),
                 description = excluded.description, heartbeat_at = excluded.heartbeat_at",
        )
        .bind(router.as_str())
        .bind(description)
        .bind(seen_version)
        .bind(now)
        .execute(&self.pool)
        .await
        .doing("record router heartbeat")?;
        Ok(())
    }

    async fn deregister_router(&self, router: &RouterId) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing("begin deregistering a router")?;
        for sql in [
            "DELETE FROM ferry_route_counts WHERE router_id = ?1",
            "DELETE FROM ferry_routers WHERE router_id = ?1",
        ] {
            sqlx::query(sql)
                .bind(router.as_str())
                .execute(&mut *tx)
                .await
                .doing("deregister router")?;
        }
        tx.commit().await.doing("commit deregistering a router")?;
        Ok(())
    }

    async fn record_route_counts(&self, router: &RouterId, counts: &[RouteCount]) -> Result<()> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing("begin route counts")?;
        sqlx::query("DELETE FROM ferry_route_counts WHERE router_id = ?1")
            .bind(router.as_str())
            .execute(&mut *tx)
            .await
            .doing("replace route counts")?;
        for c in counts {
            sqlx::query(
                "INSERT INTO ferry_route_counts
                     (router_id, migration_id, operation, phase, path, reason, count)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(router.as_str())
            .bind(&c.migration)
            .bind(&c.operation)
            .bind(&c.phase)
            .bind(&c.path)
            .bind(&c.reason)
            .bind(i64::try_from(c.count).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .doing("record route counts")?;
        }
        tx.commit().await.doing("commit route counts")
    }

    async fn route_counts(&self) -> Result<Vec<(RouterId, RouteCount)>> {
        let found: Vec<rows::RouteCountRow> = sqlx::query_as(
            "SELECT router_id, migration_id, operation, phase, path, reason, count
             FROM ferry_route_counts ORDER BY 1, 2, 3, 4, 5, 6",
        )
        .fetch_all(&self.pool)
        .await
        .doing("read route counts")?;
        found.into_iter().map(rows::route_count).collect()
    }

    async fn routers(&self, lease: Duration) -> Result<Vec<RouterRecord>> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let now = now_ms();
        let rows: Vec<rows::RouterRow<i64>> = sqlx::query_as(
            "SELECT router_id, description, seen_version, started_at, heartbeat_at
             FROM ferry_routers ORDER BY router_id",
        )
        .fetch_all(&self.pool)
        .await
        .doing("list routers")?;
        rows.into_iter()
            .map(|row| {
                let live = now.saturating_sub(row.4) < lease_ms;
                rows::router(row, live, rows::from_millis)
            })
            .collect()
    }

    fn change_feed(&self) -> ChangeFeed {
        let (tx, rx) = watch::channel(0);
        let pool = self.pool.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(FEED_POLL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if tx.is_closed() {
                    return;
                }
                match sqlx::query_scalar::<_, i64>(
                    "SELECT version FROM ferry_change_counter WHERE id = 1",
                )
                .fetch_one(&pool)
                .await
                {
                    Ok(version) => {
                        tx.send_if_modified(|v| {
                            let newer = version > *v;
                            if newer {
                                *v = version;
                            }
                            newer
                        });
                    }
                    Err(e) => tracing::warn!("change feed failed to read the counter: {e}"),
                }
            }
        });
        ChangeFeed::new(rx, task)
    }
}
