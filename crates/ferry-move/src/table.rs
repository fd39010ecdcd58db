//! [`MovedTable`]: get, insert, update, delete, each routed by the tenant's phase.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_copier::TenantMoveConfig;
use ferry_copier::plan::TablePlan;
pub(crate) use ferry_copier::plan::{Column, Key};
use ferry_domain::{MigrationId, Side, TenantId};
use ferry_router::{RouteOp, Router, RouterError};
use ferry_store::ControlStore;
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
    #[error("migration {migration} is a {kind} migration, not a tenant move")]
    NotATenantMove {
        migration: MigrationId,
        kind: &'static str,
    },
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
    /// The authoritative COMMIT of a write (two-sided, or the only side written in the phase)
    /// lost its answer (the connection dropped): the write may or may not have taken effect.
    /// `settled` says what Ferry did about it.
    #[error(
        "{side} COMMIT on {table} lost its answer ({cause}): the write may or may not have taken effect; {settled}"
    )]
    CommitUnknown {
        side: Side,
        table: String,
        cause: sqlx::Error,
        settled: String,
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
    /// Authoritative COMMITs that lost their answer (see [`MoveError::CommitUnknown`]).
    pub commits_unknown: AtomicU64,
}

/// An insert or update statement: which kind, which side, which columns.
type Shape = (bool, usize, Vec<String>);

pub struct MovedTable {
    pub(crate) router: Arc<Router>,
    pub(crate) store: Arc<dyn ControlStore>,
    pub(crate) migration: MigrationId,
    pub(crate) plan: TablePlan,
    source: PgPool,
    target: PgPool,
    pub(crate) select: [Arc<str>; 2],
    pub(crate) delete: [Arc<str>; 2],
    pub(crate) upsert: [Arc<str>; 2],
    pub(crate) newer: [Arc<str>; 2],
    /// Deletes take the tenant lock while a copy may read their side
    /// ([`ferry_copier::tenant_lock`]).
    pub(crate) lock_deletes: bool,
    /// Insert and update statements per set of columns, built on first use.
    statements: std::sync::Mutex<HashMap<Shape, Arc<str>>>,
    pub stats: TableStats,
}

pub(crate) fn index(side: Side) -> usize {
    match side {
        Side::Source => 0,
        Side::Target => 1,
    }
}

impl MovedTable {
    /// The table of a tenant_move migration, over its source and target databases. Give it
    /// two pools even on one database: a two-sided write holds a connection of each side at
    /// once, so one shared pool can run out with every connection waiting for a second.
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
            newer: both(&|t| plan.newer_than_image(t)),
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

    pub(crate) fn pool(&self, side: Side) -> &PgPool {
        match side {
            Side::Source => &self.source,
            Side::Target => &self.target,
        }
    }

    pub(crate) fn table(&self, side: Side) -> String {
        match side {
            Side::Source => self.plan.source.to_string(),
            Side::Target => self.plan.target.to_string(),
        }
    }

    pub(crate) fn count_write(&self, side: Side) {
        match side {
            Side::Source => self.stats.writes_source.fetch_add(1, Ordering::Relaxed),
            Side::Target => self.stats.writes_target.fetch_add(1, Ordering::Relaxed),
        };
    }

    pub(crate) fn count_read(&self, side: Side) {
        match side {
            Side::Source => self.stats.reads_source.fetch_add(1, Ordering::Relaxed),
            Side::Target => self.stats.reads_target.fetch_add(1, Ordering::Relaxed),
        };
    }

    pub(crate) fn check_key(&self, key: &[&str]) -> Result<Key, MoveError> {
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
    pub(crate) fn record(&self, tenant: &TenantId, op: RouteOp, decision: &RouteDecision) {
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
        self.plan.check_tenant(tenant)?;
        let key = self.check_key(key)?;
        let snapshot = self.router.snapshot()?;
        let phase = snapshot
            .phase(self.migration.as_str(), tenant.as_str())
            .phase;
        let decision = RouteDecision::read(phase);
        self.record(tenant, RouteOp::Read, &decision);
        let (side, served) = match self.read_side(decision.served(), tenant, &key).await {
            Ok(row) => (decision.served(), row),
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
                    (other, self.read_side(other, tenant, &key).await?)
                }
                None => return Err(e),
            },
        };
        // While both sides are written, the side serving may not have a change yet that the
        // buffer holds for it (a fallback read, or a lagging router's write): merged in, so
        // a client reads its acknowledged write (race 4).
        let served = if ferry_domain::WritePlan::for_phase(phase).then.is_some() {
            self.merge_buffered(side, tenant, &key, served).await?
        } else {
            served
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

    pub(crate) fn write_error(&self, side: Side) -> impl FnOnce(sqlx::Error) -> MoveError + '_ {
        move |cause| MoveError::Write {
            side,
            table: self.table(side),
            cause,
        }
    }

    pub(crate) fn check_columns(&self, row: &Row) -> Result<(), MoveError> {
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
    pub(crate) fn updatable(&self, changes: &Row) -> Result<Vec<Column>, MoveError> {
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

    pub(crate) fn shaped(&self, insert: bool, side: Side, columns: &[Column]) -> Arc<str> {
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

pub(crate) fn parse_row(text: &str) -> Result<Row, MoveError> {
    if ferry_domain::json_text::has_reserved_key(text) {
        return Err(MoveError::BadRow {
            table: String::new(),
            what: format!(
                "a row holds a JSON object with the key {:?}, which Ferry cannot carry without changing it",
                ferry_domain::json_text::RESERVED_KEY
            ),
        });
    }
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(row)) => Ok(row),
        _ => Err(MoveError::BadRow {
            table: String::new(),
            what: format!("the database returned a row that is not a JSON object: {text}"),
        }),
    }
}

/// A key value as the text PostgreSQL would print for it.
pub(crate) fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
