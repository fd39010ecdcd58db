//! The demo's second act: tiering a growing `events` table's old rows to Parquet in a local
//! directory, per tenant, while writers update, delete and insert through both routers.
//!
//! A canary cohort goes first (archived in `dual_write`, compared in `shadow`, served from
//! the cold tier in `target_primary`), the object store is then made unavailable and reads
//! fall back to the hot copies in view of the operator, one canary steps back from
//! `target_only` and is restored, and the fleet follows to `complete`. At the end every key
//! is read through a router and compared with what the writers last had acknowledged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use anyhow::Context as _;
use ferry_check::Scenario;
use ferry_domain::MigrationId;
use ferry_engine::Request;
use ferry_store::{MigrationKind, NewMigration, TenantSize};
use ferry_tier::{TieredTable, Tiering};
use indicatif::ProgressBar;
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::output;

mod steps;
mod writers;

const WRITERS: u64 = 4;

/// What the tiering act did and found, in the demo's summary.
#[derive(Serialize, Default, Debug)]
pub(super) struct TierSummary {
    pub(super) tenants: usize,
    pub(super) rows_archived: u64,
    pub(super) segments: u64,
    pub(super) hot_copies_deleted: u64,
    pub(super) rows_restored: u64,
    pub(super) writes: u64,
    pub(super) operations: TierOperations,
    pub(super) anomalies: TierAnomalies,
}

/// The tiered tables' routed operations, both routers summed.
#[derive(Serialize, Default, Debug)]
pub(super) struct TierOperations {
    pub(super) reads_hot: u64,
    pub(super) reads_cold: u64,
    pub(super) writes_hot: u64,
    pub(super) buffered: u64,
    pub(super) fallbacks: u64,
    pub(super) cold_errors: u64,
    pub(super) duplicates_refused: u64,
}

/// Keys that did not read back as last acknowledged, and requests that failed.
#[derive(Serialize, Default, Debug, Clone, Copy)]
pub(super) struct TierAnomalies {
    pub(super) lost: u64,
    pub(super) resurrected: u64,
    pub(super) stale_reads: u64,
    pub(super) failed_requests: u64,
}

impl TierAnomalies {
    pub(super) fn total(&self) -> u64 {
        self.lost + self.resurrected + self.stale_reads + self.failed_requests
    }
}

/// The act's table, migration, tables over both routers and the writers' shared state.
struct Act {
    scenario: Arc<Scenario>,
    migration: MigrationId,
    tiering: Arc<Tiering>,
    tables: Vec<Arc<TieredTable>>,
    cold_dir: PathBuf,
    rows_per_tenant: i64,
    actor: String,
    bar: ProgressBar,
    quiet: bool,
    stop: AtomicBool,
    writes: AtomicU64,
    stale_reads: AtomicU64,
    failed_requests: AtomicU64,
}

/// Runs the act: set-up, writers, the operator's steps, the final check.
pub(super) async fn run(
    scenario: Arc<Scenario>,
    work_dir: &Path,
    rows_per_tenant: i64,
    actor: String,
    quiet: bool,
) -> anyhow::Result<TierSummary> {
    let act = Arc::new(Act::setup(scenario, work_dir, rows_per_tenant, actor, quiet).await?);
    act.say(format!(
        "\ntiering: {} tenants' events older than 90 days to Parquet in {}",
        act.scenario.tenants.len(),
        act.cold_dir.display()
    ));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        writers.push(tokio::spawn(act.clone().writer(w)));
    }
    let worker = tokio::spawn(act.clone().buffer_worker());
    let played = act.play().await;
    act.stop.store(true, Relaxed);
    let mut expected = HashMap::new();
    for w in writers {
        expected.extend(w.await.context("a tiering writer")?);
    }
    worker.await.context("the buffer worker")?;
    let mut summary = played?;
    act.bar.finish_and_clear();
    summary.anomalies = act.check(&expected).await?;
    summary.writes = act.writes.load(Relaxed);
    summary.operations = act.operations();
    Ok(summary)
}

impl Act {
    async fn setup(
        scenario: Arc<Scenario>,
        work_dir: &Path,
        rows_per_tenant: i64,
        actor: String,
        quiet: bool,
    ) -> anyhow::Result<Act> {
        let schema = scenario.settings.schema.clone();
        let ddl = format!(
            "CREATE TABLE {s}.events (
                 tenant_id text NOT NULL, id bigint NOT NULL, note text, amount numeric(12,2),
                 at timestamptz NOT NULL, PRIMARY KEY (tenant_id, id))",
            s = schema.quoted()
        );
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&scenario.pool)
            .await
            .context("create the events table")?;
        let seed = format!(
            "INSERT INTO {}.events SELECT $1, i,
                 CASE WHEN i % 5 = 0 THEN NULL ELSE 'event ' || i END, i % 1000 * 0.25,
                 now() - ($2 - i) * interval '730 days' / $2
             FROM generate_series(1, $2::bigint) AS i",
            schema.quoted()
        );
        for t in &scenario.tenants {
            sqlx::query(AssertSqlSafe(seed.clone()))
                .bind(t.as_str())
                .bind(rows_per_tenant)
                .execute(&scenario.pool)
                .await
                .with_context(|| format!("fill tenant {t}'s events"))?;
        }
        let cold_dir = work_dir.join("cold");
        std::fs::create_dir_all(&cold_dir)
            .with_context(|| format!("create {}", cold_dir.display()))?;
        let migration = MigrationId::new("events_tiering")?;
        let store = &scenario.store;
        store
            .create_migration(&NewMigration {
                id: migration.clone(),
                kind: MigrationKind::Tiering,
                description: "events older than 90 days to Parquet".into(),
                config: serde_json::json!({
                    "schema": schema.as_str(), "table": "events",
                    "tenant_column": "tenant_id", "age_column": "at",
                    "cold_url": format!("file://{}", cold_dir.display()),
                    "buffer": {"dead_after": 1000},
                }),
                created_by: actor.clone(),
            })
            .await
            .context("create the tiering migration")?;
        let sizes: Vec<TenantSize> = scenario
            .tenants
            .iter()
            .map(|t| TenantSize {
                tenant: t.clone(),
                rows: rows_per_tenant as u64,
            })
            .collect();
        store.register_tenants(&migration, &sizes).await?;
        // Its own pool: a write through a tiered table holds two connections at once (the
        // tenant and key locks' transaction, and the hot write), so a pool shared with the
        // move's clients, or smaller than twice the concurrent writes, starves.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4 * WRITERS as u32 + 8)
            .connect_with((*scenario.pool.connect_options()).clone())
            .await
            .context("connect the tiering act's pool")?;
        let tiering = Arc::new(
            Tiering::open(store.clone(), &migration, pool)
                .await
                .context("open the tiering migration")?,
        );
        let tables = scenario
            .routers
            .iter()
            .map(|r| Arc::new(TieredTable::new(tiering.clone(), r.clone())))
            .collect();
        let rows = rows_per_tenant as u64 * scenario.tenants.len() as u64;
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            output::progress(rows * 3 / 4, "rows archived")
        };
        Ok(Act {
            scenario,
            migration,
            tiering,
            tables,
            cold_dir,
            rows_per_tenant,
            actor,
            bar,
            quiet,
            stop: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            stale_reads: AtomicU64::new(0),
            failed_requests: AtomicU64::new(0),
        })
    }

    fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            self.bar.suspend(|| println!("{}", line.as_ref()));
        }
    }

    fn cutoff() -> String {
        (chrono::Utc::now() - chrono::Duration::days(90)).to_rfc3339()
    }

    fn request(&self, reason: &str) -> Request {
        Request {
            actor: self.actor.clone(),
            reason: reason.to_owned(),
            force: false,
            dry_run: false,
            expect_phase: None,
        }
    }
}
