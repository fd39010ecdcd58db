//! The PostgreSQL control store, for production.
//!
//! All tables live in one schema (default `ferry`), selected through the connection's
//! `search_path`, so statements are static text and several independent stores can share a
//! database. Phase changes notify `ferry_changes_<schema>` in the committing transaction;
//! [`ControlStore::change_feed`] listens on it.

mod schema;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_domain::{RouterId, SqlIdent};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};
use sqlx::{ConnectOptions as _, Connection};
use tokio::sync::watch;

use crate::error::{QueryContext, Result, StoreError, redact_url};
use crate::feed::ChangeFeed;
use crate::model::*;
use crate::rows::{self, tenant_columns};
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

#[async_trait]
impl ControlStore for PgStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    fn describe(&self) -> String {
        self.description.clone()
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
        let rows: Vec<PgTenantRow> = if version == 0 {
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
                  (SELECT migration_id, tenant_id FROM ferry_audit_log WHERE change_version > $1)"
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
        // GREATEST: a heartbeat that arrives late must not move a router's acknowledgement back.
        sqlx::query(
            "INSERT INTO ferry_routers (router_id, description, seen_version) VALUES ($1, $2, $3)
             ON CONFLICT (router_id) DO UPDATE
             SET seen_version = GREATEST(ferry_routers.seen_version, excluded.seen_version),
                 description = excluded.description, heartbeat_at = now()",
        )
        .bind(router.as_str())
        .bind(description)
        .bind(seen_version)
        .execute(&self.pool)
        .await
        .doing("record router heartbeat")?;
        Ok(())
    }

    async fn deregister_router(&self, router: &RouterId) -> Result<()> {
        sqlx::query(
            "WITH gone AS (DELETE FROM ferry_route_counts WHERE router_id = $1)
             DELETE FROM ferry_routers WHERE router_id = $1",
        )
        .bind(router.as_str())
        .execute(&self.pool)
        .await
        .doing("deregister router")?;
        Ok(())
    }

    async fn record_route_counts(&self, router: &RouterId, counts: &[RouteCount]) -> Result<()> {
        let mut tx = self.pool.begin().await.doing("begin route counts")?;
        sqlx::query("DELETE FROM ferry_route_counts WHERE router_id = $1")
            .bind(router.as_str())
            .execute(&mut *tx)
            .await
            .doing("replace route counts")?;
        let col = |f: fn(&RouteCount) -> &str| counts.iter().map(f).collect::<Vec<&str>>();
        let n: Vec<i64> = counts
            .iter()
            .map(|c| i64::try_from(c.count).unwrap_or(i64::MAX))
            .collect();
        sqlx::query(
            "INSERT INTO ferry_route_counts
                 (router_id, migration_id, operation, phase, path, reason, count)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])",
        )
        .bind(router.as_str())
        .bind(col(|c| &c.migration))
        .bind(col(|c| &c.operation))
        .bind(col(|c| &c.phase))
        .bind(col(|c| &c.path))
        .bind(col(|c| &c.reason))
        .bind(n)
        .execute(&mut *tx)
        .await
        .doing("record route counts")?;
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
        // The database clock judges liveness, so routers on hosts with skewed clocks are
        // judged alike.
        let rows: Vec<(String, String, i64, DateTime<Utc>, DateTime<Utc>, bool)> = sqlx::query_as(
            "SELECT router_id, description, seen_version, started_at, heartbeat_at,
                    heartbeat_at > now() - $1 * interval '1 millisecond'
             FROM ferry_routers ORDER BY router_id",
        )
        .bind(lease_ms)
        .fetch_all(&self.pool)
        .await
        .doing("list routers")?;
        rows.into_iter()
            .map(|(id, d, seen, started, beat, live)| {
                rows::router((id, d, seen, started, beat), live, ok)
            })
            .collect()
    }

    fn change_feed(&self) -> ChangeFeed {
        let (tx, rx) = watch::channel(0);
        let pool = self.pool.clone();
        let channel = self.channel.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = follow_notifications(&pool, &channel, &tx).await {
                    tracing::warn!("change feed lost its connection, reconnecting: {e}");
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        ChangeFeed::new(rx, task)
    }
}

async fn follow_notifications(
    pool: &PgPool,
    channel: &str,
    tx: &watch::Sender<i64>,
) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(channel).await?;
    // A change may have committed before LISTEN took effect; read the counter once after.
    let current: i64 = sqlx::query_scalar("SELECT version FROM ferry_change_counter WHERE id = 1")
        .fetch_one(pool)
        .await?;
    tx.send_replace(current);
    loop {
        let note = listener.recv().await?;
        if let Ok(version) = note.payload().parse::<i64>() {
            tx.send_if_modified(|v| {
                let newer = version > *v;
                if newer {
                    *v = version;
                }
                newer
            });
        }
        if tx.is_closed() {
            return Ok(());
        }
    }
}
