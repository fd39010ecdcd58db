//! `ferry bench schema`: `ferry schema`'s backfill against the one `UPDATE` that does the same
//! work (the ceiling; it blocks writers for as long as it runs), and beside a live load.
//!
//! In a scratch schema `ferry_bench_schema_<pid>` (dropped afterwards, with everything the
//! bench's migrations left in `ferry_schema`): an `items` table of `--rows` rows (a text
//! `amount` such as `'123.45'`, a ~250-byte payload), primary key `(tenant_id, id)`, over
//! `--tenants` tenants with the copy bench's Zipf-like sizes. The plan adds `amount_cents
//! bigint` with `up` = `round(amount::numeric * 100)::bigint`.
//!
//! Every timed run starts right after a `CHECKPOINT` and is followed by a `VACUUM`. One
//! untimed `UPDATE` first leaves the table as every timed run finds it: each run rewrites
//! every row into the half of the table the run before freed. In order:
//!
//! - the ceiling on N connections (`--parallel`): N `UPDATE`s of a plain column over disjoint
//!   `(tenant_id, id)` ranges of equal size at once; then on one connection, one `UPDATE`;
//! - Ferry: `start`, every tenant advanced to `dual_write` by the phase engine, then every
//!   tenant's `Backfill::run_tenant` on N workers taking tenants largest first; checked
//!   (every row holds `up`, rows written = the table's rows), then rolled back;
//! - the ceiling again, one connection, then N. Each ceiling is the mean of its two timings.
//!
//! Rows are counted as written (rows affected, the backfill's outcomes), not as requested.
//! With `--live-load`: pgbench flat out, then at a fixed rate (`--live-rate` of that, `-R`)
//! alone, beside Ferry's backfill (a second migration), beside the N `UPDATE`s, and alone
//! again; tps and p99 latency of each, against the mean of the two runs alone.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use ferry_domain::{Action, Cohort, MigrationId, Phase, SqlIdent, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine};
use ferry_schema::Runner;
use ferry_schema::backfill::{Backfill, Outcome};
use ferry_store::{ControlStore, MigrationKind, NewMigration, TenantSize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions as _};

use super::Report;
use super::copy::{exec, sizes};
use crate::output;

mod live;

/// The new column's value for every existing row.
const UP: &str = "round(amount::numeric * 100)::bigint";

#[derive(Debug, Clone, Args)]
pub struct SchemaBench {
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    #[arg(long, default_value_t = 1_000)]
    pub tenants: u64,
    /// Tenants backfilled at once, each on its own connection; the UPDATE ceiling runs on as
    /// many connections (and on one).
    #[arg(long, default_value_t = ferry_copier::schedule::DEFAULT_PARALLEL)]
    pub parallel: usize,
    /// Declare the new column NOT NULL (a `NOT VALID` check while the backfill runs).
    #[arg(long)]
    pub not_null: bool,
    /// The backfill's largest batch (the plan's `backfill.max_batch`); default: the plan's.
    #[arg(long)]
    pub max_batch: Option<u64>,
    /// Also measure a live load (pgbench, in a scratch database of the same server) alone,
    /// beside Ferry's backfill and beside the UPDATEs; needs `pgbench` and a role that may
    /// create databases.
    #[arg(long)]
    pub live_load: bool,
    /// The live run's `backfill.rate_limit` (rows/s; the backfill applies it to each tenant's
    /// walk, so to each of the --parallel workers). Default: none, as the plan's default.
    #[arg(long)]
    pub live_rate_limit: Option<u64>,
    /// Seconds each live-load measurement runs.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// The live load's fixed rate, as a fraction of the tps pgbench reached alone flat out.
    #[arg(long, default_value_t = 0.6)]
    pub live_rate: f64,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub postgres_url: String,
    #[arg(long)]
    pub json: bool,
}

/// What every step needs: the flags, the database, the scratch schema and the control store.
struct Bench<'a> {
    args: &'a SchemaBench,
    pool: PgPool,
    schema: SqlIdent,
    sizes: Vec<u64>,
    store: Arc<dyn ControlStore>,
}

/// One timed run: rows written and the wall time.
#[derive(Debug, Clone, Copy)]
struct Run {
    rows: u64,
    took: Duration,
}

impl Run {
    fn rate(self) -> f64 {
        self.rows as f64 / self.took.as_secs_f64().max(1e-9)
    }

    /// The rate over both runs: the mean of their timings.
    fn mean_rate(self, other: Run) -> f64 {
        (self.rows + other.rows) as f64 / (self.took + other.took).as_secs_f64().max(1e-9)
    }
}

/// A key range `[from, to)` on `(tenant_id, id)`.
type Range = ((i64, i64), (i64, i64));

pub async fn run(args: SchemaBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.tenants >= 1 && args.rows >= args.tenants,
        "--rows must be at least --tenants"
    );
    anyhow::ensure!(args.parallel >= 1, "--parallel must be at least 1");
    anyhow::ensure!(
        args.live_rate > 0.0 && args.live_rate <= 1.0,
        "--live-rate is a fraction: more than 0, at most 1"
    );
    let pid = std::process::id();
    let schema = SqlIdent::new(format!("ferry_bench_schema_{pid}")).expect("a valid schema name");
    // Statements that take seconds are what a bench runs: not worth a warning each.
    let options = PgConnectOptions::from_str(&args.postgres_url)
        .context("the PostgreSQL URL")?
        .disable_statement_logging();
    let pool = PgPoolOptions::new()
        .max_connections(args.parallel as u32 + 2)
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(options)
        .await
        .context("connect to PostgreSQL")?;
    let had_bookkeeping: bool =
        sqlx::query_scalar("SELECT to_regnamespace('ferry_schema') IS NOT NULL")
            .fetch_one(&pool)
            .await?;
    let dir = std::env::temp_dir().join(format!("ferry-bench-schema-{pid}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let store = ferry_store::open(
        &format!("sqlite://{}", dir.join("store.db").display()),
        &ferry_store::StoreOptions::default(),
    )
    .await?;
    let bench = Bench {
        args: &args,
        pool: pool.clone(),
        schema,
        sizes: sizes(args.rows, args.tenants),
        store,
    };
    let result = measure(&bench).await;
    bench.clean_up(had_bookkeeping).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?.print(args.json)?;
    Ok(ExitCode::SUCCESS)
}

async fn measure(b: &Bench<'_>) -> anyhow::Result<Report> {
    let bytes = b.generate().await?;
    b.say("priming: one untimed UPDATE, then VACUUM…".into());
    b.update(&[FULL]).await?;
    let ranges = key_ranges(&b.sizes, b.args.parallel);
    let n = ranges.len();
    let n_before = b.update(&ranges).await?;
    let one_before = b.update(&[FULL]).await?;
    let ferry = b.ferry_backfill().await?;
    let one_after = b.update(&[FULL]).await?;
    let n_after = b.update(&ranges).await?;
    let mut report = Report::new("schema");
    report.figure("rows", b.args.rows as f64);
    report.figure("tenants", b.args.tenants as f64);
    report.figure("parallel", n as f64);
    report.figure("bytes_per_row", bytes as f64 / b.args.rows as f64);
    report.figure("not_null", f64::from(u8::from(b.args.not_null)));
    if let Some(max) = b.args.max_batch {
        report.figure("max_batch", max as f64);
    }
    if let (true, Some(limit)) = (b.args.live_load, b.args.live_rate_limit) {
        report.figure("live_rate_limit", limit as f64);
    }
    let ceiling = n_before.mean_rate(n_after);
    let ceiling_1 = one_before.mean_rate(one_after);
    report.figure("update_rows_per_s", ceiling);
    report.figure("update_before_rows_per_s", n_before.rate());
    report.figure("update_after_rows_per_s", n_after.rate());
    report.figure("update_1_rows_per_s", ceiling_1);
    report.figure("update_1_before_rows_per_s", one_before.rate());
    report.figure("update_1_after_rows_per_s", one_after.rate());
    report.figure("backfill_rows_per_s", ferry.rate());
    report.figure("backfill_rows_written", ferry.rows as f64);
    report.figure("backfill_seconds", ferry.took.as_secs_f64());
    report.ratio("backfill_vs_update", ferry.rate() / ceiling);
    report.ratio("backfill_vs_update_1", ferry.rate() / ceiling_1);
    report.ratio("update_n_vs_1", ceiling / ceiling_1);
    if b.args.live_load {
        b.say("live load: pgbench flat out, then at a fixed rate alone, beside Ferry's backfill, beside the UPDATEs, alone again…".into());
        live::live(b, &ranges).await?.add_to(&mut report);
    }
    Ok(report)
}

/// The whole table: one `UPDATE` without a key range.
const FULL: Range = ((i64::MIN, i64::MIN), (i64::MAX, i64::MAX));

/// `parallel` disjoint ranges of `(tenant_id, id)` holding as many rows each as can be, for
/// tenants `1..` of `sizes` rows with ids `1..=size`. Together they cover every key.
fn key_ranges(sizes: &[u64], parallel: usize) -> Vec<Range> {
    let total: u64 = sizes.iter().sum();
    let key_at = |row: u64| {
        let mut before = 0;
        for (i, n) in sizes.iter().enumerate() {
            if row < before + n {
                return (i as i64 + 1, (row - before) as i64 + 1);
            }
            before += n;
        }
        FULL.1
    };
    let parallel = parallel.max(1) as u64;
    let bounds: Vec<(i64, i64)> = (0..=parallel)
        .map(|k| match k {
            0 => FULL.0,
            k if k == parallel => FULL.1,
            k => key_at(total * k / parallel),
        })
        .collect();
    bounds.windows(2).map(|w| (w[0], w[1])).collect()
}

impl Bench<'_> {
    fn say(&self, line: String) {
        if !self.args.json {
            eprintln!("{line}");
        }
    }

    fn s(&self) -> String {
        self.schema.quoted()
    }

    fn migration(&self, suffix: &str) -> String {
        format!("bs{}{suffix}", std::process::id())
    }

    /// Creates and fills `items`, vacuumed; returns its bytes.
    async fn generate(&self) -> anyhow::Result<i64> {
        let s = self.s();
        exec(
            &self.pool,
            format!(
                "CREATE SCHEMA {s};
                 CREATE TABLE {s}.items (tenant_id bigint NOT NULL, id bigint NOT NULL,
                     amount text NOT NULL, payload text NOT NULL, ceiling_cents bigint,
                     PRIMARY KEY (tenant_id, id));"
            ),
        )
        .await?;
        self.say(format!(
            "generating {} rows over {} tenants…",
            output::count(self.args.rows),
            self.args.tenants
        ));
        let counts: Vec<i64> = self.sizes.iter().map(|n| *n as i64).collect();
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {s}.items (tenant_id, id, amount, payload)
             SELECT t.tenant, g, (((g * 7919) % 10000000) / 100.0)::numeric(12,2)::text,
                    md5(g::text) || md5(t.tenant || '-' || g) || repeat('ferry ', 31)
             FROM unnest($1::bigint[]) WITH ORDINALITY AS t(n, tenant), generate_series(1, t.n) AS g"
        )))
        .bind(&counts)
        .execute(&self.pool)
        .await?;
        exec(&self.pool, format!("VACUUM ANALYZE {s}.items")).await?;
        let bytes: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT pg_relation_size('{s}.items')"
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes)
    }

    /// One timed ceiling: an `UPDATE` per range at once, each on its own connection, right
    /// after a `CHECKPOINT`; `VACUUM` after.
    async fn update(&self, ranges: &[Range]) -> anyhow::Result<Run> {
        exec(&self.pool, "CHECKPOINT".into()).await?;
        let started = Instant::now();
        let rows = self.update_once(ranges, None).await?;
        let took = started.elapsed();
        exec(&self.pool, format!("VACUUM {}.items", self.s())).await?;
        anyhow::ensure!(
            rows == self.args.rows,
            "the UPDATEs wrote {rows} rows of {}",
            self.args.rows
        );
        self.say(format!(
            "UPDATE on {} connection(s): {} rows in {:.1} s",
            ranges.len(),
            output::count(rows),
            took.as_secs_f64()
        ));
        Ok(Run { rows, took })
    }

    /// `SET ceiling_cents = up` over each range at once; rows written. With a `timeout`, each
    /// statement is cancelled (and rolled back) when it runs out.
    async fn update_once(
        &self,
        ranges: &[Range],
        timeout: Option<Duration>,
    ) -> anyhow::Result<u64> {
        let mut sql = format!("UPDATE {}.items SET ceiling_cents = {UP}", self.s());
        if ranges != [FULL] {
            sql.push_str(" WHERE (tenant_id, id) >= ($1, $2) AND (tenant_id, id) < ($3, $4)");
        }
        let timeout_ms = timeout.map_or(0, |t| t.as_millis().max(1));
        let runs = ranges.iter().map(|&((a, b), (c, d))| {
            let sql = sql.clone();
            async move {
                let mut tx = self.pool.begin().await?;
                let set = format!("SET LOCAL statement_timeout = {timeout_ms}");
                sqlx::query(AssertSqlSafe(set)).execute(&mut *tx).await?;
                let mut q = sqlx::query(AssertSqlSafe(sql));
                if ranges != [FULL] {
                    q = q.bind(a).bind(b).bind(c).bind(d);
                }
                match q.execute(&mut *tx).await {
                    Ok(done) => tx.commit().await.map(|()| done.rows_affected()),
                    Err(e) => {
                        // Rolled back here, not left to the pool: a cancelled statement's
                        // connection comes back clean.
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }
        });
        // Every statement is awaited, even when one fails: none is dropped mid-flight.
        let mut rows = 0;
        for done in futures_util::future::join_all(runs).await {
            rows += done?;
        }
        Ok(rows)
    }

    /// The plan: one `add_column` with `up`, the backfill's batches and rate as configured.
    fn plan(&self, rate_limit: Option<u64>) -> serde_json::Value {
        let mut backfill = serde_json::json!({});
        if let Some(max) = self.args.max_batch {
            backfill["max_batch"] = max.into();
            backfill["min_batch"] = max.min(500).into();
        }
        if let Some(limit) = rate_limit {
            backfill["rate_limit"] = limit.into();
        }
        serde_json::json!({
            "schema": self.schema.as_str(),
            "tenant_column": "tenant_id",
            "backfill": backfill,
            "operations": [{
                "op": "add_column",
                "table": "items",
                "column": {"name": "amount_cents", "type": "bigint", "nullable": !self.args.not_null},
                "up": UP,
            }],
        })
    }

    /// A schema-change migration created in the control store with every tenant, started,
    /// and every tenant advanced to `dual_write` through the phase engine.
    async fn start(&self, id: &str, rate_limit: Option<u64>) -> anyhow::Result<Started> {
        let m = MigrationId::new(id).context("a bench migration id")?;
        let plan = self.plan(rate_limit);
        self.store
            .create_migration(&NewMigration {
                id: m.clone(),
                kind: MigrationKind::SchemaChange,
                description: "bench".into(),
                config: plan.clone(),
                created_by: "bench".into(),
            })
            .await?;
        let tenants: Vec<TenantSize> = (1..)
            .zip(&self.sizes)
            .map(|(i, rows): (u64, &u64)| TenantSize {
                tenant: TenantId::new(i.to_string()).expect("numbers are valid tenant ids"),
                rows: *rows,
            })
            .collect();
        self.store.register_tenants(&m, &tenants).await?;
        let runner = ferry_schema::runner::open(self.pool.clone(), &m, &plan).await?;
        runner.start().await?;
        let engine = PhaseEngine::new(self.store.clone(), EngineSettings::default());
        let rollout = engine
            .rollout(
                &m,
                &Cohort::All,
                Action::Advance,
                &super::request(),
                |_, _| {},
            )
            .await?;
        anyhow::ensure!(
            rollout.refused.is_empty()
                && rollout.moved.len() == tenants.len()
                && rollout.moved.iter().all(|t| t.to_phase == Phase::DualWrite),
            "the rollout to dual_write refused {} tenant(s)",
            rollout.refused.len()
        );
        let column = runner.resolved().backfills[0].columns[0].0.clone();
        let backfill = Backfill::new(
            self.pool.clone(),
            Arc::new(runner.resolved().clone()),
            self.store.clone(),
        );
        let mut queue = tenants;
        queue.sort_by_key(|t| std::cmp::Reverse(t.rows));
        Ok(Started {
            runner,
            m,
            column,
            backfill: Arc::new(backfill),
            queue: queue.into_iter().map(|t| t.tenant).collect(),
        })
    }

    /// Ferry's timed backfill of every tenant, checked, then rolled back.
    async fn ferry_backfill(&self) -> anyhow::Result<Run> {
        self.say("ferry: start, every tenant to dual_write…".into());
        let started = self.start(&self.migration(""), None).await?;
        exec(&self.pool, "CHECKPOINT".into()).await?;
        let bar = if self.args.json {
            indicatif::ProgressBar::hidden()
        } else {
            output::progress(self.args.rows, "backfill")
        };
        let t0 = Instant::now();
        let rows = started
            .backfill_all(self.args.parallel, Arc::default(), &bar)
            .await?;
        let took = t0.elapsed();
        bar.finish_and_clear();
        self.say(format!(
            "ferry: {} rows backfilled in {:.1} s; checking every row…",
            output::count(rows),
            took.as_secs_f64()
        ));
        let (total, wrong): (i64, i64) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT count(*), count(*) FILTER (WHERE {} IS DISTINCT FROM ({UP})) FROM {}.items",
            SqlIdent::new(started.column.clone())?.quoted(),
            self.s()
        )))
        .fetch_one(&self.pool)
        .await?;
        anyhow::ensure!(wrong == 0, "{wrong} row(s) do not hold up(amount)");
        anyhow::ensure!(
            rows == total as u64,
            "the backfill wrote {rows} rows; the table holds {total}"
        );
        started.runner.rollback().await?;
        exec(&self.pool, format!("VACUUM {}.items", self.s())).await?;
        Ok(Run { rows, took })
    }

    /// Drops the scratch schema and what the bench's migrations left in `ferry_schema` (all
    /// of it if the bench created it). Errors are ignored: nothing may be there.
    async fn clean_up(&self, had_bookkeeping: bool) {
        let mut sql = Vec::new();
        for m in [self.migration(""), self.migration("_live")] {
            let version = SqlIdent::new(format!("{}_{m}", self.schema.as_str()));
            if let Ok(version) = version {
                sql.push(format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    version.quoted()
                ));
            }
        }
        sql.push(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.s()));
        for m in [self.migration(""), self.migration("_live")] {
            sql.push(format!(
                "DROP FUNCTION IF EXISTS ferry_schema.\"s_{m}_0\"()"
            ));
            for table in ["steps", "migrations"] {
                sql.push(format!(
                    "DELETE FROM ferry_schema.{table} WHERE migration = '{m}'"
                ));
            }
        }
        if !had_bookkeeping {
            sql.push("DROP SCHEMA IF EXISTS ferry_schema CASCADE".into());
        }
        for statement in sql {
            let _ = exec(&self.pool, statement).await;
        }
    }
}

/// A started migration with every tenant in `dual_write`, ready to backfill.
struct Started {
    runner: Runner,
    m: MigrationId,
    /// The new column as the backfill writes it (its physical name).
    column: String,
    backfill: Arc<Backfill>,
    /// Tenants, largest first.
    queue: VecDeque<TenantId>,
}

impl Started {
    /// Every tenant backfilled by `parallel` workers taking the next tenant from one queue;
    /// rows written. Once `stop` is set no worker takes another tenant (pause the migration
    /// to stop the ones running after their batch).
    async fn backfill_all(
        &self,
        parallel: usize,
        stop: Arc<AtomicBool>,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<u64> {
        let queue = Arc::new(Mutex::new(self.queue.clone()));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..parallel {
            let (queue, backfill) = (queue.clone(), self.backfill.clone());
            let (stop, bar) = (stop.clone(), bar.clone());
            workers.spawn(async move {
                let mut rows = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let next = queue.lock().expect("the queue's lock").pop_front();
                    let Some(tenant) = next else { break };
                    match backfill.run_tenant(&tenant).await? {
                        Outcome::Complete { rows: n } => {
                            rows += n;
                            bar.inc(n);
                        }
                        Outcome::Stopped { rows: n, .. } => {
                            rows += n;
                            break;
                        }
                        Outcome::NotNow { phase } => {
                            anyhow::bail!("tenant {tenant} is in {phase}, not dual_write")
                        }
                    }
                }
                Ok(rows)
            });
        }
        let mut rows = 0;
        while let Some(done) = workers.join_next().await {
            rows += done.context("join a backfill worker")??;
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ranges_split_the_rows_evenly_and_cover_every_key() {
        // Tenant 1 has 5 rows, 2 has 3, 3 has 2: row 5 (0-based) is tenant 2's id 1.
        let ranges = key_ranges(&[5, 3, 2], 2);
        assert_eq!(ranges, vec![(FULL.0, (2, 1)), ((2, 1), FULL.1)]);
        assert_eq!(key_ranges(&[5, 3, 2], 1), vec![FULL]);
        let four = key_ranges(&[5, 3, 2], 4);
        assert_eq!(four.len(), 4);
        assert!(four.windows(2).all(|w| w[0].1 == w[1].0));
    }
}
