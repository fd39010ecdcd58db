//! Routers and the acknowledgement barrier: the change counter and the changes since a
//! version, router heartbeats and route counts, and the change feed.
//!
//! A router follows the counter, applies what changed, and heartbeats the version it has
//! applied; a phase change becomes effective once every live router has acknowledged it, and
//! a router that stops beating is presumed dead after its lease. Liveness is judged by the
//! database's clock on PostgreSQL, so routers on skewed hosts are judged alike, and by the
//! local clock on SQLite, whose one file lives on one machine. The change feed listens for
//! notifications on PostgreSQL and polls the counter on SQLite.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ferry_domain::RouterId;
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::watch;

use crate::error::{QueryContext, Result};
use crate::feed::ChangeFeed;
use crate::model::{RouteCount, RouterRecord, TenantRecord};
use crate::pg::{self, PgStore};
use crate::rows::{self, tenant_columns};
use crate::sqlite::{self, SqliteStore};

/// How often the SQLite change feed polls the counter. A read of one row; cheap enough to keep
/// phase changes visible to routers within a tenth of a second.
const FEED_POLL: Duration = Duration::from_millis(100);

/// Moves a change feed forward to `version`; an older one (a late notification) is ignored.
fn advance_feed(tx: &watch::Sender<i64>, version: i64) {
    tx.send_if_modified(|v| {
        let newer = version > *v;
        if newer {
            *v = version;
        }
        newer
    });
}

/// The change counter, router heartbeats and route counts.
#[async_trait]
pub trait RouterStore {
    /// The current value of the store-wide change counter.
    async fn change_version(&self) -> Result<i64>;
    /// Tenants changed after `version`, across all migrations. With `version == 0` (a fresh
    /// router) tenants still in plain `legacy` are left out: that is the default a router
    /// assumes for a tenant it has no entry for.
    async fn changes_since(&self, version: i64) -> Result<Vec<TenantRecord>>;
    /// Records that `router` is alive and has applied every change up to `seen_version`.
    async fn heartbeat(
        &self,
        router: &RouterId,
        description: &str,
        seen_version: i64,
    ) -> Result<()>;
    async fn deregister_router(&self, router: &RouterId) -> Result<()>;
    /// Replaces a router's cumulative route-decision counts (sent with its heartbeat).
    async fn record_route_counts(&self, router: &RouterId, counts: &[RouteCount]) -> Result<()>;
    /// Route-decision counts per router, for every registered router.
    async fn route_counts(&self) -> Result<Vec<(RouterId, RouteCount)>>;
    /// Registered routers, each marked live if it beat within `lease`.
    async fn routers(&self, lease: Duration) -> Result<Vec<RouterRecord>>;
    /// Follows the change counter; wakes when it moves.
    fn change_feed(&self) -> ChangeFeed;
}

#[async_trait]
impl RouterStore for PgStore {
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
        let rows: Vec<pg::PgTenantRow> = if version == 0 {
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
        pg::decode_tenants(rows)
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
                rows::router((id, d, seen, started, beat), live, pg::ok)
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
            advance_feed(tx, version);
        }
        if tx.is_closed() {
            return Ok(());
        }
    }
}

#[async_trait]
impl RouterStore for SqliteStore {
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
        let rows: Vec<sqlite::SqliteTenantRow> = if version == 0 {
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
        sqlite::decode_tenants(rows)
    }

    async fn heartbeat(
        &self,
        router: &RouterId,
        description: &str,
        seen_version: i64,
    ) -> Result<()> {
        let now = sqlite::now_ms();
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
        let now = sqlite::now_ms();
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
                    Ok(version) => advance_feed(&tx, version),
                    Err(e) => tracing::warn!("change feed failed to read the counter: {e}"),
                }
            }
        });
        ChangeFeed::new(rx, task)
    }
}
