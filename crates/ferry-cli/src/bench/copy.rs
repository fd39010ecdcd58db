//! `ferry bench copy`: the copier against the ceiling of its path and a naive loop.
//!
//! Everything happens in a scratch schema `ferry_bench_copy_<pid>` of the given database
//! (dropped afterwards): a generated `orders` table of `--rows` rows, ~300 bytes each, over
//! `--tenants` tenants with skewed (Zipf-like) sizes. Three copies of it are timed:
//!
//! - the ceiling: one `INSERT INTO … SELECT * FROM orders` (same database, one statement);
//! - naive: per tenant, keyset batches of 1,000 rows, one transaction each, no validation;
//! - Ferry: the copier, per tenant, with adaptive batches, the tenant lock per batch,
//!   version-guarded writes, a checkpoint per batch (SQLite control store) and validation of
//!   every batch;
//! - Ferry again with `"source_lock": "rows"` (every source row locked `FOR SHARE`) and with
//!   `"none"` (validation still removes any row a concurrent delete raced), to show what each
//!   way of closing race 2 costs.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_copier::schedule::Schedule;
use ferry_copier::{Copier, Outcome, SourceLock};
use ferry_domain::{Action, Cohort, MigrationId, SqlIdent, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine};
use ferry_store::{ControlStore, CopyDirection, MigrationKind, NewMigration, TenantSize};
use sqlx::AssertSqlSafe;

use super::Report;
use crate::args::CopyBench;
use crate::output;

/// Rows per tenant, Zipf-like (s = 0.8) and summing to `rows`, every tenant at least one.
pub(super) fn sizes(rows: u64, tenants: u64) -> Vec<u64> {
    let weights: Vec<f64> = (1..=tenants).map(|i| 1.0 / (i as f64).powf(0.8)).collect();
    let total: f64 = weights.iter().sum();
    let mut out: Vec<u64> = weights
        .iter()
        .map(|w| ((w / total) * rows as f64).floor().max(1.0) as u64)
        .collect();
    let assigned: u64 = out.iter().sum();
    if let Some(first) = out.first_mut() {
        *first += rows.saturating_sub(assigned);
    }
    out
}

pub async fn run(args: CopyBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.tenants >= 1 && args.rows >= args.tenants,
        "--rows must be at least --tenants"
    );
    let schema = SqlIdent::new(format!("ferry_bench_copy_{}", std::process::id()))
        .expect("a valid schema name");
    let pool = ferry_copier::connect(&args.postgres_url, "connect to PostgreSQL").await?;
    let result = measure(&args, &pool, &schema).await;
    let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.quoted());
    let _ = sqlx::query(AssertSqlSafe(drop)).execute(&pool).await;
    let report = result?;
    report.print(args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn exec(pool: &sqlx::PgPool, sql: String) -> anyhow::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    Ok(())
}

async fn measure(
    args: &CopyBench,
    pool: &sqlx::PgPool,
    schema: &SqlIdent,
) -> anyhow::Result<Report> {
    let s = schema.quoted();
    let quiet = args.json;
    let say = |line: String| {
        if !quiet {
            eprintln!("{line}");
        }
    };
    let (names, sizes, bytes) = generate(args, pool, &s, &say).await?;

    // The ceiling: one statement, measured before and after the other copies (this kind of
    // machine drifts by a fifth within minutes); the figure is their mean.
    say("ceiling: INSERT … SELECT…".into());
    let ceiling_before = ceiling_copy(pool, schema).await?;

    let naive = naive_copy(pool, &s, &names, &say).await?;

    // Ferry: the copier over a fresh SQLite control store.
    let dir = std::env::temp_dir().join(format!("ferry-bench-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let dataset: Vec<(String, u64)> = names.iter().cloned().zip(sizes.iter().copied()).collect();
    say("ferry: the copier, the tenant lock per batch (the default)…".into());
    let ferry = ferry_copy(
        args,
        pool,
        schema,
        &dataset,
        &dir,
        SourceLock::Tenant,
        "ferry",
        None,
    )
    .await;
    let mut others = Vec::new();
    for (lock, target) in [
        (SourceLock::Rows, "ferry_row_locked"),
        (SourceLock::None, "ferry_unlocked"),
    ] {
        if ferry.is_err() {
            break;
        }
        say(format!(
            "ferry: the copier, \"source_lock\": \"{}\"…",
            lock.as_str()
        ));
        others.push((
            target,
            ferry_copy(args, pool, schema, &dataset, &dir, lock, target, None).await,
        ));
    }
    let live = if args.live_load && ferry.is_ok() {
        say("live load: pgbench alone, beside an unthrottled copy, beside Ferry's copy…".into());
        Some(live_load(args, pool, schema, &dataset, &dir).await)
    } else {
        None
    };
    let _ = std::fs::remove_dir_all(&dir);
    let ferry = ferry?;
    say("ceiling again…".into());
    let ceiling_after = ceiling_copy(pool, schema).await?;
    report(
        args,
        bytes,
        Timings {
            ceiling_before,
            ceiling_after,
            naive,
            ferry,
            others,
            live,
        },
    )
}

/// Creates and fills `orders` (skewed tenants, ~300 bytes a row), vacuumed; returns the
/// tenants, their sizes and the table's bytes.
async fn generate(
    args: &CopyBench,
    pool: &sqlx::PgPool,
    s: &str,
    say: &impl Fn(String),
) -> anyhow::Result<(Vec<String>, Vec<u64>, i64)> {
    exec(
        pool,
        format!(
            "CREATE SCHEMA {s};
         CREATE TABLE {s}.orders (
             tenant_id text NOT NULL, id bigint NOT NULL, amount numeric(12,2) NOT NULL,
             status text NOT NULL, note text NOT NULL, placed_at timestamptz NOT NULL,
             version bigint NOT NULL DEFAULT 1, PRIMARY KEY (tenant_id, id));"
        ),
    )
    .await?;
    let sizes = sizes(args.rows, args.tenants);
    let names: Vec<String> = (0..args.tenants)
        .map(|i| format!("tenant-{i:05}"))
        .collect();
    say(format!(
        "generating {} rows over {} tenants…",
        output::count(args.rows),
        args.tenants
    ));
    let insert = format!(
        "INSERT INTO {s}.orders (tenant_id, id, amount, status, note, placed_at)
         SELECT t.name, g, (g % 100000) / 100.0, (ARRAY['new','paid','shipped','done'])[1 + g % 4],
                md5(g::text) || md5(t.name || g) || repeat('ferry ', 30),
                timestamptz '2025-01-01' + g * interval '1 second'
         FROM unnest($1::text[], $2::bigint[]) AS t(name, n), generate_series(1, t.n) AS g"
    );
    let counts: Vec<i64> = sizes.iter().map(|n| *n as i64).collect();
    sqlx::query(AssertSqlSafe(insert))
        .bind(&names)
        .bind(&counts)
        .execute(pool)
        .await?;
    exec(pool, format!("VACUUM ANALYZE {s}.orders")).await?;
    let bytes: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT pg_relation_size('{s}.orders')"
    )))
    .fetch_one(pool)
    .await?;
    Ok((names, sizes, bytes))
}

/// Naive: 1,000-row keyset batches, a transaction each, into a table dropped after.
async fn naive_copy(
    pool: &sqlx::PgPool,
    s: &str,
    names: &[String],
    say: &impl Fn(String),
) -> anyhow::Result<Duration> {
    exec(
        pool,
        format!("CREATE TABLE {s}.naive (LIKE {s}.orders INCLUDING ALL)"),
    )
    .await?;
    say("naive: 1,000-row batches…".into());
    exec(pool, "CHECKPOINT".into()).await?;
    let naive_sql = format!(
        "WITH b AS (SELECT * FROM {s}.orders WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT 1000),
              i AS (INSERT INTO {s}.naive SELECT * FROM b)
         SELECT count(*)::bigint, coalesce(max(id), 0) FROM b"
    );
    let started = Instant::now();
    for name in names {
        let mut last = 0i64;
        loop {
            let (n, max): (i64, i64) = sqlx::query_as(AssertSqlSafe(naive_sql.clone()))
                .bind(name)
                .bind(last)
                .fetch_one(pool)
                .await?;
            if n == 0 {
                break;
            }
            last = max;
        }
    }
    let naive = started.elapsed();
    exec(pool, format!("DROP TABLE {s}.naive")).await?;
    Ok(naive)
}

/// What the copies took; the other locks' and the live load's results may be errors, which
/// the report returns.
struct Timings {
    ceiling_before: Duration,
    ceiling_after: Duration,
    naive: Duration,
    ferry: Duration,
    others: Vec<(&'static str, anyhow::Result<Duration>)>,
    live: Option<anyhow::Result<(f64, f64, f64, f64)>>,
}

fn report(args: &CopyBench, bytes: i64, t: Timings) -> anyhow::Result<Report> {
    let ceiling = (t.ceiling_before + t.ceiling_after) / 2;
    let rows = args.rows as f64;
    let rate = |d: Duration| rows / d.as_secs_f64().max(1e-9);
    let mut report = Report::new("copy");
    report.figure("rows", rows);
    report.figure("tenants", args.tenants as f64);
    report.figure("bytes_per_row", bytes as f64 / rows);
    report.figure("ceiling_rows_per_s", rate(ceiling));
    report.figure("ceiling_before_rows_per_s", rate(t.ceiling_before));
    report.figure("ceiling_after_rows_per_s", rate(t.ceiling_after));
    report.figure("naive_rows_per_s", rate(t.naive));
    report.figure("ferry_rows_per_s", rate(t.ferry));
    for (target, took) in &t.others {
        let took = took.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
        report.figure(format!("{target}_rows_per_s"), rate(*took));
        report.ratio(format!("{target}_vs_ceiling"), rate(*took) / rate(ceiling));
    }
    report.ratio("ferry_vs_ceiling", rate(t.ferry) / rate(ceiling));
    report.ratio("naive_vs_ceiling", rate(t.naive) / rate(ceiling));
    report.ratio("ferry_vs_naive", rate(t.ferry) / rate(t.naive));
    if let Some(live) = t.live {
        let (idle, unthrottled, with_ferry, ferry_rate) = live?;
        report.figure("live_tps_alone", idle);
        // What Ferry's copy did meanwhile: a kept load means little if the copy stood still.
        report.figure("live_ferry_rows_per_s", ferry_rate);
        report.figure("live_tps_unthrottled_copy", unthrottled);
        report.figure("live_tps_ferry_copy", with_ferry);
        report.ratio("live_load_kept_unthrottled", unthrottled / idle.max(1e-9));
        report.ratio("live_load_kept_ferry", with_ferry / idle.max(1e-9));
    }
    Ok(report)
}

/// One timed `INSERT INTO ceiling SELECT * FROM orders` into a fresh table, dropped after.
async fn ceiling_copy(pool: &sqlx::PgPool, schema: &SqlIdent) -> anyhow::Result<Duration> {
    let s = schema.quoted();
    exec(
        pool,
        format!("CREATE TABLE {s}.ceiling (LIKE {s}.orders INCLUDING ALL)"),
    )
    .await?;
    // Every timed copy starts right after a checkpoint, so none pays for another's dirty
    // pages (a 2M-row copy is enough WAL to trigger one mid-way otherwise).
    exec(pool, "CHECKPOINT".into()).await?;
    let started = Instant::now();
    exec(
        pool,
        format!("INSERT INTO {s}.ceiling SELECT * FROM {s}.orders"),
    )
    .await?;
    let took = started.elapsed();
    // Dropped, its dirty pages are discarded rather than written back under the next copy.
    exec(pool, format!("DROP TABLE {s}.ceiling")).await?;
    Ok(took)
}

/// pgbench's tps alone, beside repeated `INSERT … SELECT` copies, and beside Ferry's copier.
async fn live_load(
    args: &CopyBench,
    pool: &sqlx::PgPool,
    schema: &SqlIdent,
    dataset: &[(String, u64)],
    dir: &std::path::Path,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let load =
        super::live_load::LiveLoad::create(pool, &args.postgres_url, args.live_seconds).await?;
    let result = async {
        // Each measurement starts right after a checkpoint, as the timed copies do: the
        // copies before leave enough WAL to set one off under whichever run comes next.
        exec(pool, "CHECKPOINT".into()).await?;
        let idle = load.run().await?;
        let s = schema.quoted();
        exec(pool, format!("CREATE TABLE {s}.unthrottled (LIKE {s}.orders INCLUDING ALL)")).await?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let copying = {
            let (pool, stop, s) = (pool.clone(), stop.clone(), s.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sql = format!("TRUNCATE {s}.unthrottled; INSERT INTO {s}.unthrottled SELECT * FROM {s}.orders");
                    if exec(&pool, sql).await.is_err() {
                        break;
                    }
                }
            })
        };
        exec(pool, "CHECKPOINT".into()).await?;
        let unthrottled = load.run().await?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = copying.await;
        exec(pool, format!("DROP TABLE {s}.unthrottled")).await?;
        // Ferry's copy sets up (store, plan) first, then waits; the load starts, and after
        // its first second (left out of the figure) the copy starts, so it takes its latency
        // baseline under the load, as it would in production.
        let (ready, set_up) = tokio::sync::oneshot::channel();
        let (go, start) = tokio::sync::oneshot::channel();
        let ferry = {
            let (args, pool, schema, dataset, dir) =
                (args.clone(), pool.clone(), schema.clone(), dataset.to_vec(), dir.to_owned());
            tokio::spawn(async move {
                let gate = Gate { ready, go: start };
                ferry_copy(&args, &pool, &schema, &dataset, &dir, SourceLock::Tenant, "ferry_live", Some(gate))
                    .await
            })
        };
        set_up
            .await
            .context("Ferry's live copy stopped while setting up")?;
        let count = format!("SELECT count(*) FROM {s}.ferry_live");
        let (with_ferry, before) = tokio::join!(load.run(), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let before: Result<i64, sqlx::Error> =
                sqlx::query_scalar(AssertSqlSafe(count.clone())).fetch_one(pool).await;
            let _ = go.send(());
            before
        });
        let (with_ferry, before) = (with_ferry?, before?);
        let after: i64 = sqlx::query_scalar(AssertSqlSafe(count))
            .fetch_one(pool)
            .await?;
        ferry.abort();
        let copied = (after - before).max(0) as f64;
        // The load alone again, once the aborted copy's last statement has ended: the figure
        // is the mean of both (pgbench alone moves by a fifth between runs here).
        tokio::time::sleep(Duration::from_secs(1)).await;
        exec(pool, "CHECKPOINT".into()).await?;
        let idle_after = load.run().await?;
        Ok::<_, anyhow::Error>((
            (idle + idle_after) / 2.0,
            unthrottled,
            with_ferry,
            copied / args.live_seconds.max(1) as f64,
        ))
    }
    .await;
    load.drop_database().await;
    result
}

/// Lets the live-load measurement start Ferry's copy at a moment of its choosing: `ready`
/// when set up, then copying on `go`.
struct Gate {
    ready: tokio::sync::oneshot::Sender<()>,
    go: tokio::sync::oneshot::Receiver<()>,
}

#[allow(clippy::too_many_arguments)]
async fn ferry_copy(
    args: &CopyBench,
    pool: &sqlx::PgPool,
    schema: &SqlIdent,
    tenants: &[(String, u64)],
    dir: &std::path::Path,
    lock: SourceLock,
    target: &str,
    gate: Option<Gate>,
) -> anyhow::Result<Duration> {
    let (store, m, tenants) = open_store(args, schema, tenants, dir, lock, target).await?;
    let engine = PhaseEngine::new(store.clone(), EngineSettings::default());
    let request = super::request();
    engine
        .rollout(&m, &Cohort::All, Action::Advance, &request, |_, _| {})
        .await?;
    let copier = Arc::new(
        Copier::open(
            store.clone(),
            PhaseEngine::new(store.clone(), EngineSettings::default()),
            &m,
            pool.clone(),
            pool.clone(),
            true,
        )
        .await?,
    );
    exec(pool, "CHECKPOINT".into()).await?;
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        output::progress(args.rows, "ferry")
    };
    let live = gate.is_some();
    if let Some(gate) = gate {
        let _ = gate.ready.send(());
        gate.go
            .await
            .context("the live load ended before the copy started")?;
    }
    let took = copy_all(&copier, tenants, args.parallel, &bar).await?;
    bar.finish_and_clear();
    if !live {
        // As the ceiling's: its dirty pages are not written back under the next copy.
        let table = SqlIdent::new(target).context("a bench table name")?;
        exec(
            pool,
            format!("DROP TABLE {}.{}", schema.quoted(), table.quoted()),
        )
        .await?;
    }
    Ok(took)
}

/// A fresh SQLite control store with the tenant move from `orders` to `target` and its
/// tenants registered.
async fn open_store(
    args: &CopyBench,
    schema: &SqlIdent,
    tenants: &[(String, u64)],
    dir: &std::path::Path,
    lock: SourceLock,
    target: &str,
) -> anyhow::Result<(Arc<dyn ControlStore>, MigrationId, Vec<TenantSize>)> {
    let store = ferry_store::open(
        &format!("sqlite://{}", dir.join(format!("{target}.db")).display()),
        &ferry_store::StoreOptions::default(),
    )
    .await?;
    let m = MigrationId::new("bench_copy").expect("a valid id");
    store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::TenantMove,
            description: "bench".into(),
            config: serde_json::json!({
                "source": {"schema": schema.as_str(), "table": "orders"},
                "target": {"schema": schema.as_str(), "table": target},
                "tenant_column": "tenant_id",
                "version_column": "version",
                "copy": {"min_batch": 500, "max_batch": 20000, "start_batch": 1000, "target_batch_ms": 500,
                         "source_lock": lock.as_str()},
                // Throughput is measured unpaced (nothing else runs to protect); the live-load
                // run keeps the default pace controller.
                "backpressure": if target == "ferry_live" {
                    match args.live_latency_factor {
                        Some(factor) => serde_json::json!({"latency_factor": factor}),
                        None => serde_json::json!({}),
                    }
                } else {
                    serde_json::json!({"latency_factor": 0.0})
                },
            }),
            created_by: "bench".into(),
        })
        .await?;
    let tenants: Vec<TenantSize> = tenants
        .iter()
        .map(|(n, rows)| TenantSize {
            tenant: TenantId::new(n.clone()).expect("generated ids are valid"),
            rows: *rows,
        })
        .collect();
    store.register_tenants(&m, &tenants).await?;
    Ok((store, m, tenants))
}

/// Copies every tenant forward; any outcome but a clean completion fails the bench. Returns
/// the wall time.
async fn copy_all(
    copier: &Arc<Copier>,
    tenants: Vec<TenantSize>,
    parallel: usize,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // The schedule `ferry copy run --parallel` uses.
    let mut schedule = Schedule::new(
        tenants.into_iter().map(|t| (t.tenant, t.rows)).collect(),
        parallel,
        copier.small_tenant_rows(),
    );
    let mut running = tokio::task::JoinSet::new();
    loop {
        while let Some(tenant) = schedule.start_next() {
            let copier = copier.clone();
            running.spawn(async move {
                let outcome = copier.copy(&tenant, CopyDirection::Forward, |_| {}).await;
                (tenant, outcome)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let (tenant, outcome) = done.context("join a copy task")?;
        schedule.finished(&tenant);
        match outcome? {
            Outcome::Complete {
                rows, mismatches, ..
            } => {
                anyhow::ensure!(mismatches == 0, "the bench copy found mismatches");
                bar.inc(rows);
            }
            other => anyhow::bail!("a bench copy ended with {other:?}"),
        }
    }
    Ok(started.elapsed())
}
