//! [`MovedTable`]: get, insert, update, delete, each routed by the tenant's phase.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_copier::TenantMoveConfig;
use ferry_copier::plan::{Column, Key, TablePlan};
use ferry_domain::{MigrationId, Side, TenantId};
use ferry_router::{RouteOp, Router, RouterError};
use ferry_store::{ControlStore, CopyDirection};
use sqlx::{AssertSqlSafe, PgPool};

use crate::route::{Path, RouteDecision, RouteReason};

/// A row as column name -> JSON value (PostgreSQL's own `to_jsonb` form, so every type round
/// trips: numerics exact, timestamps ISO, bytea `\x…`).
pub type Row = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoveError {
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),
    #[error(transparent)]
    Copy(#[from] ferry_copier::CopyError),
    #[error("{table}: {what}")]
    BadRow { table: String, what: String },
    #[error("{side} write to {table} failed: {cause}")]
    Write {
        side: Side,
        table: String,
        cause: sqlx::Error,
    },
    #[error("{side} read of {table} failed: {cause}")]
    Read {
        side: Side,
        table: String,
        cause: sqlx::Error,
    },
}

/// Counters an operator (or a test) reads: what went where and what went wrong.
#[derive(Debug, Default)]
pub struct TableStats {
    pub reads_source: AtomicU64,
    pub reads_target: AtomicU64,
    pub writes_source: AtomicU64,
    pub writes_target: AtomicU64,
    pub fallbacks: AtomicU64,
    pub shadow_mismatches: AtomicU64,
    pub buffered: AtomicU64,
}

/// An insert or update statement: which kind, which side, which columns.
type Shape = (bool, usize, Vec<String>);

pub struct MovedTable {
    router: Arc<Router>,
    store: Arc<dyn ControlStore>,
    migration: MigrationId,
    plan: TablePlan,
    source: PgPool,
    target: PgPool,
    select: [Arc<str>; 2],
    delete: [Arc<str>; 2],
    upsert: [Arc<str>; 2],
    /// Deletes take the tenant lock while a copy may read their side
    /// ([`ferry_copier::tenant_lock`]).
    lock_deletes: bool,
    /// Insert and update statements per set of columns, built on first use.
    statements: std::sync::Mutex<HashMap<Shape, Arc<str>>>,
    pub stats: TableStats,
}

fn index(side: Side) -> usize {
    match side {
        Side::Source => 0,
        Side::Target => 1,
    }
}

impl MovedTable {
    /// The table of a tenant_move migration, over its source and target databases.
    pub async fn open(
        router: Arc<Router>,
        store: Arc<dyn ControlStore>,
        migration: &MigrationId,
        source: PgPool,
        target: PgPool,
    ) -> Result<MovedTable, MoveError> {
        let record = store.migration(migration).await?;
        let config =
            TenantMoveConfig::from_json(&record.config).map_err(ferry_copier::CopyError::from)?;
        let names = config.names().map_err(ferry_copier::CopyError::from)?;
        let plan = TablePlan::load(&names, &source, &target, false).await?;
        let both = |f: &dyn Fn(&ferry_copier::plan::Table) -> String| -> [Arc<str>; 2] {
            [f(&plan.source).into(), f(&plan.target).into()]
        };
        Ok(MovedTable {
            select: both(&|t| plan.select_row(t)),
            delete: both(&|t| plan.delete_row(t)),
            upsert: both(&|t| plan.upsert(t)),
            statements: Default::default(),
            lock_deletes: config.copy.source_lock() == ferry_copier::SourceLock::Tenant,
            router,
            store,
            migration: migration.clone(),
            plan,
            source,
            target,
            stats: TableStats::default(),
        })
    }

    fn pool(&self, side: Side) -> &PgPool {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }

    fn table(&self, side: Side) -> String {
        match side {
            Side::Source => self.plan.source.to_string(),
            Side::Target => self.plan.target.to_string(),
        }
    }

    fn count_write(&self, side: Side) {
        match side {
            Side::Source => self.stats.writes_source.fetch_add(1, Ordering::Relaxed),
            Side::Target => self.stats.writes_target.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn count_read(&self, side: Side) {
        match side {
            Side::Source => self.stats.reads_source.fetch_add(1, Ordering::Relaxed),
            Side::Target => self.stats.reads_target.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn check_key(&self, key: &[&str]) -> Result<Key, MoveError> {
        if key.len() != self.plan.order.len() {
            return Err(MoveError::BadRow {
                table: self.plan.source.to_string(),
                what: format!(
                    "a key has {} value(s): {}",
                    self.plan.order.len(),
                    self.plan
                        .order
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(key.iter().map(|v| (*v).to_owned()).collect())
    }

    async fn read_side(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
    ) -> Result<Option<Row>, MoveError> {
        let mut q =
            sqlx::query_scalar::<_, String>(AssertSqlSafe(self.select[index(side)].clone()))
                .bind(tenant.as_str());
        for v in key {
            q = q.bind(v.as_str());
        }
        let text = q
            .fetch_optional(self.pool(side))
            .await
            .map_err(|cause| MoveError::Read {
                side,
                table: self.table(side),
                cause,
            })?;
        self.count_read(side);
        text.map(|t| parse_row(&t)).transpose()
    }

    /// Counts a route decision (by migration, phase, path and reason) and logs it at debug.
    fn record(&self, tenant: &TenantId, op: RouteOp, decision: &RouteDecision) {
        let (reason, phase) = decision.reason_label();
        self.router.record_route(
            self.migration.as_str(),
            op,
            phase,
            decision.path_label(),
            reason,
        );
        tracing::debug!(migration = %self.migration, tenant = %tenant, op = op.as_str(), ?decision, "route");
    }

    /// Reads one row by key, from where the tenant's phase says.
    pub async fn get(&self, tenant: &TenantId, key: &[&str]) -> Result<Option<Row>, MoveError> {
        let key = self.check_key(key)?;
        let snapshot = self.router.snapshot()?;
        let phase = snapshot
            .phase(self.migration.as_str(), tenant.as_str())
            .phase;
        let decision = RouteDecision::read(phase);
        self.record(tenant, RouteOp::Read, &decision);
        let served = match self.read_side(decision.served(), tenant, &key).await {
            Ok(row) => row,
            Err(e) => match decision.fallback {
                Some(other) => {
                    let fallback = RouteDecision {
                        path: match other {
                            Side::Source => Path::Source,
                            Side::Target => Path::Target,
                        },
                        reason: RouteReason::Fallback(phase),
                        ..RouteDecision::read(phase)
                    };
                    self.record(tenant, RouteOp::Read, &fallback);
                    self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(migration = %self.migration, tenant = %tenant, ?fallback, "read fell back: {e}");
                    self.read_side(other, tenant, &key).await?
                }
                None => return Err(e),
            },
        };
        if let Some(other) = decision.compare {
            // Shadow read: compare, never answer from it, never fail the request for it.
            match self.read_side(other, tenant, &key).await {
                Ok(shadow) if shadow != served => {
                    self.stats.shadow_mismatches.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(migration = %self.migration, tenant = %tenant, ?key, "shadow read differs");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(migration = %self.migration, tenant = %tenant, "shadow read failed: {e}")
                }
            }
        }
        drop(snapshot);
        Ok(served)
    }

    fn write_error(&self, side: Side) -> impl FnOnce(sqlx::Error) -> MoveError + '_ {
        move |cause| MoveError::Write {
            side,
            table: self.table(side),
            cause,
        }
    }

    /// Inserts a row (its tenant column is set to `tenant`, its version to the first one).
    pub async fn insert(&self, tenant: &TenantId, row: Row) -> Result<Row, MoveError> {
        self.check_columns(&row)?;
        let snapshot = self.router.snapshot()?;
        let decision = RouteDecision::write(
            snapshot
                .phase(self.migration.as_str(), tenant.as_str())
                .phase,
        );
        self.record(tenant, RouteOp::Write, &decision);
        let (first, then) = decision.write_sides();
        let columns: Vec<Column> = self
            .plan
            .columns
            .iter()
            .filter(|c| row.contains_key(c.name.as_str()))
            .cloned()
            .collect();
        let payload = serde_json::Value::Object(row).to_string();
        // The authoritative write's transaction stays open (holding the row) until the other
        // side has the same row: two requests on one key then reach both sides in the same
        // order, and a delete cannot slip between a write and its mirror.
        let mut tx = self
            .pool(first)
            .begin()
            .await
            .map_err(self.write_error(first))?;
        let sql = self.shaped(true, first, &columns);
        let stored: String = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(&payload)
            .fetch_one(&mut *tx)
            .await
            .map_err(self.write_error(first))?;
        if let Some(second) = then {
            self.mirror(second, tenant, &stored).await?;
        }
        tx.commit().await.map_err(self.write_error(first))?;
        self.count_write(first);
        drop(snapshot);
        parse_row(&stored)
    }

    /// Updates the given columns of a row; `None` if there is no such row.
    pub async fn update(
        &self,
        tenant: &TenantId,
        key: &[&str],
        changes: Row,
    ) -> Result<Option<Row>, MoveError> {
        let key = self.check_key(key)?;
        let columns = self.updatable(&changes)?;
        let snapshot = self.router.snapshot()?;
        let decision = RouteDecision::write(
            snapshot
                .phase(self.migration.as_str(), tenant.as_str())
                .phase,
        );
        self.record(tenant, RouteOp::Write, &decision);
        let (first, then) = decision.write_sides();
        let sql = self.shaped(false, first, &columns);
        let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(tenant.as_str());
        for v in &key {
            q = q.bind(v.as_str());
        }
        let mut tx = self
            .pool(first)
            .begin()
            .await
            .map_err(self.write_error(first))?;
        let stored = q
            .bind(serde_json::Value::Object(changes).to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.write_error(first))?;
        let Some(stored) = stored else {
            tx.commit().await.map_err(self.write_error(first))?;
            return Ok(None);
        };
        if let Some(second) = then {
            self.mirror(second, tenant, &stored).await?;
        }
        tx.commit().await.map_err(self.write_error(first))?;
        self.count_write(first);
        drop(snapshot);
        parse_row(&stored).map(Some)
    }

    /// Deletes a row; whether it existed.
    pub async fn delete(&self, tenant: &TenantId, key: &[&str]) -> Result<bool, MoveError> {
        let key = self.check_key(key)?;
        let snapshot = self.router.snapshot()?;
        let phase = snapshot
            .phase(self.migration.as_str(), tenant.as_str())
            .phase;
        let decision = RouteDecision::write(phase);
        self.record(tenant, RouteOp::Write, &decision);
        let (first, then) = decision.write_sides();
        let mut tx = self
            .pool(first)
            .begin()
            .await
            .map_err(self.write_error(first))?;
        // Held until both sides are done: a copy batch that could write this row back waits,
        // or finished before and its copy is deleted with the rest.
        if self.lock_deletes && ferry_copier::tenant_lock::guards_deletes(phase, first) {
            ferry_copier::tenant_lock::take(&mut tx, &self.migration, tenant, false)
                .await
                .map_err(self.write_error(first))?;
        }
        let existed = self.delete_on(first, tenant, &key, &mut tx).await?;
        if let Some(second) = then {
            let result = async {
                let mut other = self.second_side(second).await?;
                self.delete_on(second, tenant, &key, &mut other).await?;
                other.commit().await.map_err(self.write_error(second))
            }
            .await;
            if let Err(e) = result {
                self.buffer(second, tenant, &key, "delete", serde_json::Value::Null, &e)
                    .await?;
            }
        }
        tx.commit().await.map_err(self.write_error(first))?;
        drop(snapshot);
        Ok(existed)
    }

    /// A transaction on the non-authoritative side that gives up waiting for a row lock
    /// after a second. Two routers one phase apart write the sides in opposite orders; a
    /// lock wait between them would otherwise be a deadlock the database cannot see (each
    /// waits on the other's open transaction through the application). The loser's change
    /// goes to the update buffer instead.
    async fn second_side(
        &self,
        side: Side,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, MoveError> {
        let mut tx = self
            .pool(side)
            .begin()
            .await
            .map_err(self.write_error(side))?;
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut *tx)
            .await
            .map_err(self.write_error(side))?;
        Ok(tx)
    }

    async fn delete_on(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<bool, MoveError> {
        let mut q =
            sqlx::query(AssertSqlSafe(self.delete[index(side)].clone())).bind(tenant.as_str());
        for v in key {
            q = q.bind(v.as_str());
        }
        let done = q.execute(&mut **tx).await.map_err(self.write_error(side))?;
        self.count_write(side);
        Ok(done.rows_affected() > 0)
    }

    /// Writes the authoritative side's row image to the other side (never older over newer);
    /// a failure is buffered, not returned.
    async fn mirror(&self, side: Side, tenant: &TenantId, image: &str) -> Result<(), MoveError> {
        let result = async {
            let mut tx = self.second_side(side).await?;
            sqlx::query(AssertSqlSafe(self.upsert[index(side)].clone()))
                .bind(format!("[{image}]"))
                .execute(&mut *tx)
                .await
                .map_err(self.write_error(side))?;
            tx.commit().await.map_err(self.write_error(side))
        }
        .await;
        match result {
            Ok(()) => {
                self.count_write(side);
                Ok(())
            }
            Err(e) => {
                let row = parse_row(image)?;
                let key: Key = self
                    .plan
                    .order
                    .iter()
                    .map(|c| row.get(c.name.as_str()).map(json_text).unwrap_or_default())
                    .collect();
                let payload: serde_json::Value =
                    serde_json::from_str(image).unwrap_or(serde_json::Value::Null);
                self.buffer(side, tenant, &key, "upsert", payload, &e).await
            }
        }
    }

    async fn buffer(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
        operation: &str,
        payload: serde_json::Value,
        error: &MoveError,
    ) -> Result<(), MoveError> {
        tracing::warn!(migration = %self.migration, tenant = %tenant, %side, "secondary write failed, buffered: {error}");
        let key = serde_json::Value::from(key.clone()).to_string();
        let direction = match side {
            Side::Target => CopyDirection::Forward,
            Side::Source => CopyDirection::Reverse,
        };
        let op = format!("{operation}:{}", direction.as_str());
        self.store
            .enqueue_update(&self.migration, tenant, &key, &op, &payload)
            .await?;
        self.stats.buffered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn check_columns(&self, row: &Row) -> Result<(), MoveError> {
        for name in row.keys() {
            if !self.plan.columns.iter().any(|c| c.name.as_str() == name) {
                return Err(MoveError::BadRow {
                    table: self.plan.source.to_string(),
                    what: format!("no column {name:?}"),
                });
            }
        }
        Ok(())
    }

    /// The columns an update may set: any but the tenant, the key and the version.
    fn updatable(&self, changes: &Row) -> Result<Vec<Column>, MoveError> {
        self.check_columns(changes)?;
        let mut out = Vec::new();
        for c in &self.plan.columns {
            if !changes.contains_key(c.name.as_str()) {
                continue;
            }
            if c.name == self.plan.tenant
                || c.name == self.plan.version
                || self.plan.key.iter().any(|k| k.name == c.name)
            {
                return Err(MoveError::BadRow {
                    table: self.plan.source.to_string(),
                    what: format!(
                        "column {} cannot be updated (tenant, key or version)",
                        c.name
                    ),
                });
            }
            out.push(c.clone());
        }
        if out.is_empty() {
            return Err(MoveError::BadRow {
                table: self.plan.source.to_string(),
                what: "an update needs at least one column".into(),
            });
        }
        Ok(out)
    }

    fn shaped(&self, insert: bool, side: Side, columns: &[Column]) -> Arc<str> {
        let names: Vec<String> = columns.iter().map(|c| c.name.to_string()).collect();
        let mut cache = self
            .statements
            .lock()
            .expect("the statement cache is only inserted into");
        cache
            .entry((insert, index(side), names))
            .or_insert_with(|| {
                let table = match side {
                    Side::Source => &self.plan.source,
                    Side::Target => &self.plan.target,
                };
                if insert {
                    self.plan.insert_row(table, columns).into()
                } else {
                    self.plan.update_row(table, columns).into()
                }
            })
            .clone()
    }
}

fn parse_row(text: &str) -> Result<Row, MoveError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(row)) => Ok(row),
        _ => Err(MoveError::BadRow {
            table: String::new(),
            what: format!("the database returned a row that is not a JSON object: {text}"),
        }),
    }
}

/// A key value as the text PostgreSQL would print for it.
fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
