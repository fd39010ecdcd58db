//! The backfill: each tenant's history gets `up(old)` in the new columns, in keyset batches
//! on the table's real primary key (`(tenant_id, id)` walks `id` within the tenant), with the
//! copier's machinery: its batch sizing towards a target batch time, its backpressure
//! signals and verdict, its checkpoint and progress in the control store (so `ferry copy
//! status`, `/metrics` and the dashboard show the backfill like any copy), and its pause,
//! cancel and throttle controls.
//!
//! A batch is one statement: the next rows of the tenant locked in key order and updated by
//! `ctid`, then, in the same transaction, every row of the batch's key range re-checked to
//! hold `up(old)` (so a non-deterministic `up`, or a trigger of the application's rewriting
//! the column, stops the backfill instead of being found at `complete`). The checkpoint is
//! written after the commit: a crash in between repeats a batch, which writes the same values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_copier::backpressure::{self, Verdict};
use ferry_copier::batch::BatchSizer;
use ferry_domain::{Phase, TenantId};
use ferry_store::{BackfillProgress, ControlStore, CopyDirection};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row};

use crate::error::{DbContext, PlanError, SchemaError};
use crate::plan::names::{literal, quote};
use crate::plan::virtual_schema::VSchema;
use crate::plan::{Resolved, Settings, TableBackfill};
use crate::runner::{self, MigrationState};

/// Groups the plan's backfilled columns by table, with the keys the batches walk.
pub(crate) fn tables(
    settings: &Settings,
    vs: &VSchema,
    columns: &[(String, String, String)],
) -> Result<Vec<TableBackfill>, PlanError> {
    let mut out: Vec<TableBackfill> = Vec::new();
    for (table, column, up) in columns {
        let Some(vt) = vs.tables.iter().find(|t| &t.physical == table) else {
            continue;
        };
        let required = vt
            .columns
            .iter()
            .any(|c| &c.physical == column && c.not_null);
        if let Some(t) = out.iter_mut().find(|t| &t.name == table) {
            t.columns.push((column.clone(), up.clone()));
            if required {
                t.required.push(column.clone());
            }
            continue;
        }
        let ty_of = |name: &str| {
            vt.columns
                .iter()
                .find(|c| c.physical == name)
                .map(|c| c.ty.clone())
        };
        let tenant_type = ty_of(&settings.tenant_column).ok_or_else(|| {
            PlanError::top(
                "tenant_column",
                format!(
                    "table {table:?} has no column {:?}: the backfill walks one tenant at a time",
                    settings.tenant_column
                ),
            )
        })?;
        if vt.primary_key.is_empty() {
            return Err(PlanError::top(
                "operations",
                format!("table {table:?} has no primary key for the backfill to walk"),
            ));
        }
        let order = vt
            .primary_key
            .iter()
            .filter(|k| **k != settings.tenant_column)
            .map(|k| (k.clone(), ty_of(k).unwrap_or_default()))
            .collect();
        out.push(TableBackfill {
            table: crate::plan::names::qualified(&settings.schema, table),
            name: table.clone(),
            tenant_column: settings.tenant_column.clone(),
            tenant_type,
            order,
            columns: vec![(column.clone(), up.clone())],
            required: if required {
                vec![column.clone()]
            } else {
                Vec::new()
            },
        });
    }
    Ok(out)
}

/// How a tenant's backfill ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every table done; `rows` written by this run.
    Complete { rows: u64 },
    /// Paused or cancelled by an operator; the checkpoint is kept (cancelled: forgotten).
    Stopped { rows: u64, why: String },
    /// The tenant is not in a phase where its backfill runs.
    NotNow { phase: Phase },
}

pub struct Backfill {
    pool: PgPool,
    resolved: Arc<Resolved>,
    store: Arc<dyn ControlStore>,
}

impl Backfill {
    pub fn new(pool: PgPool, resolved: Arc<Resolved>, store: Arc<dyn ControlStore>) -> Backfill {
        Backfill {
            pool,
            resolved,
            store,
        }
    }

    /// Backfills one tenant from its checkpoint. In `target_primary` (back from
    /// `target_only`) the reverse copy is recorded done at once: the triggers kept the old
    /// shape in step with every write of the new one, so there is nothing to copy back.
    pub async fn run_tenant(&self, tenant: &TenantId) -> Result<Outcome, SchemaError> {
        let migration = &self.resolved.migration;
        if runner::state(&self.pool, migration.as_str()).await? != Some(MigrationState::Started) {
            return Err(SchemaError::Refused(format!(
                "{migration} is not started: run `ferry schema start {migration}` first"
            )));
        }
        let record = self.store.tenant(migration, tenant).await?;
        let phase = record.state.phase;
        let direction = match phase {
            Phase::DualWrite | Phase::Shadow => CopyDirection::Forward,
            Phase::TargetPrimary => CopyDirection::Reverse,
            _ => return Ok(Outcome::NotNow { phase }),
        };
        let mut progress = self
            .store
            .progress(migration, Some(tenant))
            .await?
            .into_iter()
            .find(|p| p.direction == direction && p.epoch == record.copy_epoch)
            .unwrap_or_else(|| {
                let mut p = BackfillProgress::new(migration.clone(), tenant.clone(), direction);
                p.epoch = record.copy_epoch;
                p
            });
        if progress.complete {
            return Ok(Outcome::Complete { rows: 0 });
        }
        if direction == CopyDirection::Reverse {
            progress.complete = true;
            self.store.record_backfill(&progress).await?;
            return Ok(Outcome::Complete { rows: 0 });
        }
        if progress.rows_total == 0 {
            progress.rows_total = self.count(tenant).await?;
        }
        self.walk(tenant, &mut progress).await
    }

    async fn count(&self, tenant: &TenantId) -> Result<u64, SchemaError> {
        let mut total = 0i64;
        for b in &self.resolved.backfills {
            let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT count(*) FROM {} WHERE {} = CAST($1 AS {})",
                b.table,
                quote(&b.tenant_column),
                b.tenant_type
            )))
            .bind(tenant.as_str())
            .fetch_one(&self.pool)
            .await
            .db(format!("count tenant {tenant}'s rows in {}", b.name))?;
            total += n;
        }
        Ok(total.max(0) as u64)
    }

    async fn walk(
        &self,
        tenant: &TenantId,
        progress: &mut BackfillProgress,
    ) -> Result<Outcome, SchemaError> {
        let settings = &self.resolved.settings;
        let mut sizer = BatchSizer::new(
            if progress.batch_size > 0 {
                progress.batch_size
            } else {
                settings.backfill.start_batch
            },
            settings.backfill.min_batch,
            settings.backfill.max_batch,
            Duration::from_millis(settings.backfill.target_batch_ms),
        );
        let started = Instant::now();
        let mut rows_now = 0u64;
        let mut last_batch = None;
        let tables = &self.resolved.backfills;
        let mut at = match &progress.last_key {
            Some(k) => tables
                .iter()
                .position(|t| Some(&t.name) == k.first())
                .unwrap_or(0),
            None => 0,
        };
        while at < tables.len() {
            if let Some(why) = self.stopped(tenant).await? {
                self.store.record_backfill(progress).await?;
                return Ok(Outcome::Stopped {
                    rows: rows_now,
                    why,
                });
            }
            if self.hold(progress, last_batch).await? {
                continue;
            }
            let table = &tables[at];
            let after: Vec<String> = match &progress.last_key {
                Some(k) if k.first() == Some(&table.name) => k[1..].to_vec(),
                _ => Vec::new(),
            };
            let t0 = Instant::now();
            let asked = sizer.size();
            let (rows, last) = self.batch(tenant, table, &after, asked).await?;
            ferry_crash::crash_point!("schema_backfill_batch");
            let took = t0.elapsed();
            last_batch = Some(took);
            rows_now += rows;
            progress.rows_done += rows;
            progress.batch_size = sizer.observe(rows, took);
            progress.rows_per_s = rows_now as f64 / started.elapsed().as_secs_f64().max(1e-3);
            progress.throttled = None;
            match last {
                Some(key) if rows >= asked => {
                    let mut k = vec![table.name.clone()];
                    k.extend(key);
                    progress.last_key = Some(k);
                }
                _ => {
                    at += 1;
                    progress.last_key = tables.get(at).map(|t| vec![t.name.clone()]);
                }
            }
            self.store.record_backfill(progress).await?;
            self.pace(rows, took).await?;
        }
        progress.complete = true;
        progress.rows_total = progress.rows_total.max(progress.rows_done);
        self.store.record_backfill(progress).await?;
        Ok(Outcome::Complete { rows: rows_now })
    }

    /// An operator's pause or cancel, if set. A cancel forgets the checkpoint.
    async fn stopped(&self, tenant: &TenantId) -> Result<Option<String>, SchemaError> {
        let control = self
            .store
            .control(&self.resolved.migration, Some(tenant))
            .await?;
        Ok(if control.cancelled {
            Some("cancelled".into())
        } else if control.paused {
            Some("paused".into())
        } else {
            None
        })
    }

    /// The copier's backpressure verdict on this database; holding is said in the progress.
    async fn hold(
        &self,
        progress: &mut BackfillProgress,
        last_batch: Option<Duration>,
    ) -> Result<bool, SchemaError> {
        let settings = &self.resolved.settings;
        let signals = backpressure::read(
            &self.pool,
            &self.pool,
            &[],
            &settings.backpressure,
            last_batch,
        )
        .await;
        let verdict = backpressure::judge(
            &signals,
            &settings.backpressure,
            Duration::from_millis(settings.backfill.target_batch_ms),
        );
        match verdict {
            Verdict::Go => Ok(false),
            Verdict::Hold(why) => {
                progress.throttled = Some(why);
                self.store.record_backfill(progress).await?;
                tokio::time::sleep(Duration::from_millis(settings.backpressure.hold_poll_ms)).await;
                Ok(true)
            }
        }
    }

    /// Keeps the rows/s under the operator's or the plan's rate limit.
    async fn pace(&self, rows: u64, took: Duration) -> Result<(), SchemaError> {
        let control = self.store.control(&self.resolved.migration, None).await?;
        let limit = control
            .rate_limit
            .or(self.resolved.settings.backfill.rate_limit);
        if let Some(limit) = limit.filter(|l| *l > 0) {
            let should = Duration::from_secs_f64(rows as f64 / limit as f64);
            if should > took {
                tokio::time::sleep(should - took).await;
            }
        }
        Ok(())
    }

    /// One batch: the next `limit` rows after `after` updated and re-checked in one
    /// transaction. Returns the rows written and the last key.
    async fn batch(
        &self,
        tenant: &TenantId,
        table: &TableBackfill,
        after: &[String],
        limit: u64,
    ) -> Result<(u64, Option<Vec<String>>), SchemaError> {
        let (update, check) = statements(table, !after.is_empty(), limit);
        let mut tx = self.pool.begin().await.db("begin a backfill batch")?;
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL ferry.backfill = {}",
            literal(self.resolved.migration.as_str())
        )))
        .execute(&mut *tx)
        .await
        .db("mark the backfill's transaction")?;
        let mut q = sqlx::query(AssertSqlSafe(update.as_str())).bind(tenant.as_str());
        for k in after {
            q = q.bind(k);
        }
        let row = q
            .fetch_one(&mut *tx)
            .await
            .db(format!("backfill tenant {tenant} in {}", table.name))?;
        let rows: i64 = row.try_get(0).db("read the batch's count")?;
        let last: Option<Vec<String>> = row.try_get(1).db("read the batch's last key")?;
        if let Some(last) = &last {
            let mut q =
                sqlx::query_scalar::<_, i64>(AssertSqlSafe(check.as_str())).bind(tenant.as_str());
            for k in after.iter().chain(last.iter()) {
                q = q.bind(k);
            }
            let wrong = q
                .fetch_one(&mut *tx)
                .await
                .db(format!("check tenant {tenant}'s batch in {}", table.name))?;
            if wrong > 0 {
                return Err(SchemaError::BackfillMismatch {
                    tenant: tenant.to_string(),
                    table: table.name.clone(),
                    rows: wrong as u64,
                    key: last.clone(),
                });
            }
        }
        tx.commit().await.db("commit a backfill batch")?;
        Ok((rows.max(0) as u64, last))
    }
}

/// The batch's update (returning its count and last key as text) and its check.
fn statements(t: &TableBackfill, lower: bool, limit: u64) -> (String, String) {
    let keys: Vec<String> = t.order.iter().map(|(c, _)| quote(c)).collect();
    let key_list = keys.join(", ");
    let params = |first: usize| {
        t.order
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| format!("CAST(${} AS {ty})", first + i))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let tenant = format!(
        "{} = CAST($1 AS {})",
        quote(&t.tenant_column),
        t.tenant_type
    );
    let from = if lower {
        format!(" AND ({key_list}) > ({})", params(2))
    } else {
        String::new()
    };
    let set = t
        .columns
        .iter()
        .map(|(c, up)| format!("{} = ({up})", quote(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let desc = keys
        .iter()
        .map(|k| format!("{k} DESC"))
        .collect::<Vec<_>>()
        .join(", ");
    let as_text = keys
        .iter()
        .map(|k| format!("{k}::text"))
        .collect::<Vec<_>>()
        .join(", ");
    let update = format!(
        "WITH u AS (UPDATE {table} SET {set} WHERE ctid = ANY (ARRAY(
             SELECT ctid FROM {table} WHERE {tenant}{from} ORDER BY {key_list} LIMIT {limit} FOR UPDATE))
           RETURNING {key_list})
         SELECT count(*)::bigint, (SELECT ARRAY[{as_text}] FROM u ORDER BY {desc} LIMIT 1) FROM u",
        table = t.table,
    );
    let upper_first = if lower { 2 + t.order.len() } else { 2 };
    let differs = t
        .columns
        .iter()
        .map(|(c, up)| format!("{} IS DISTINCT FROM ({up})", quote(c)))
        .collect::<Vec<_>>()
        .join(" OR ");
    let check = format!(
        "SELECT count(*)::bigint FROM {} WHERE {tenant}{from} AND ({key_list}) <= ({}) AND ({differs})",
        t.table,
        params(upper_first)
    );
    (update, check)
}
