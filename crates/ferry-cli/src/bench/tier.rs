//! `ferry bench tier`: the archiver and the cold tier against what PostgreSQL itself does.
//!
//! In a scratch schema `ferry_bench_tier_<pid>` (dropped afterwards): an `events` table of
//! `--rows` rows (~300 bytes each: numeric, a repeated status, text, a timestamp) over
//! `--tenants` tenants, every row older than the cutoff. Measured, in order:
//!
//! - the ceiling: `COPY (SELECT * FROM events) TO STDOUT` into a local file;
//! - Ferry: every tenant archived (two at a time) to a local object store, each segment read
//!   back and the rows compared again under the tenant's lock, as in production;
//! - size: the segments' bytes against `pg_total_relation_size` of the table;
//! - point reads: cold (pending buffer, manifest, bloom filter, pages) against hot, p50/p99;
//! - a `TieredTable` read in `legacy` against a direct query of the same row (mean);
//! - buffered updates applied per second (segment rewrites).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_domain::{MigrationId, RouterId, SqlIdent, TenantId};
use ferry_router::{Router, RouterSettings};
use ferry_store::{ControlStore, MigrationKind, NewMigration, TenantSize};
use ferry_tier::{TieredTable, Tiering};
use futures_util::TryStreamExt as _;
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgPoolCopyExt as _;

use super::Report;
use crate::args::TierBench;
use crate::output;

pub async fn run(args: TierBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.tenants >= 1 && args.rows >= args.tenants && args.samples >= 1,
        "--rows must be at least --tenants, and --samples at least 1"
    );
    let schema = SqlIdent::new(format!("ferry_bench_tier_{}", std::process::id()))
        .expect("a valid schema name");
    let pool = sqlx::PgPool::connect(&args.postgres_url)
        .await
        .context("connect to PostgreSQL")?;
    let dir = std::env::temp_dir().join(format!("ferry-bench-tier-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let result = measure(&args, &pool, &schema, &dir).await;
    let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.quoted());
    let _ = sqlx::query(AssertSqlSafe(drop)).execute(&pool).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?.print(args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn measure(
    args: &TierBench,
    pool: &sqlx::PgPool,
    schema: &SqlIdent,
    dir: &std::path::Path,
) -> anyhow::Result<Report> {
    let s = schema.quoted();
    let say = |line: String| {
        if !args.json {
            eprintln!("{line}");
        }
    };
    say(format!(
        "generating {} rows over {} tenants…",
        output::count(args.rows),
        args.tenants
    ));
    let data = generate(args, pool, &s).await?;

    // The export ceiling: COPY … TO STDOUT into a file.
    say("ceiling: COPY (SELECT …) TO a file…".into());
    let ceiling = export_ceiling(pool, &s, dir).await?;

    // Ferry: every tenant archived, two at a time.
    let cold_dir = dir.join("cold");
    let bench = open_tiering(pool, schema, dir, &cold_dir, &data).await?;
    say("ferry: archiving every tenant…".into());
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        output::progress(data.rows as u64, "archive")
    };
    let archive = archive_all(&bench, &bar).await?;
    bar.finish_and_clear();
    let parquet = dir_bytes(&cold_dir);

    // Point reads, cold against hot, on the same random keys.
    say("point reads: cold against hot…".into());
    let keys = sample_keys(&bench.tenants, data.per_tenant, args.samples);
    let (cold, hot) = point_reads(&bench.tiering, &keys).await?;

    // A TieredTable read in legacy against the direct query it wraps.
    say("router: TieredTable in legacy against a direct query…".into());
    let (routed, direct) = routed_reads(&bench, pool, &s, &keys).await?;

    // Buffered updates applied per second: one tenant's changes, spread over its rows.
    say("buffer: applying buffered updates…".into());
    let (applied, apply) = apply_updates(&bench, args.updates, data.per_tenant).await?;

    Ok(report(&Measured {
        tenants: args.tenants,
        data,
        ceiling,
        archive,
        parquet,
        cold,
        hot,
        reads: keys.len(),
        routed,
        direct,
        applied,
        apply,
    }))
}

/// The generated `events` table: its tenants, their rows and its size.
struct Dataset {
    names: Vec<String>,
    per_tenant: u64,
    rows: f64,
    relation: i64,
}

/// Creates and fills `events` (every row older than the cutoff), vacuumed and checkpointed.
async fn generate(args: &TierBench, pool: &sqlx::PgPool, s: &str) -> anyhow::Result<Dataset> {
    let per_tenant = args.rows / args.tenants;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.events (
             tenant_id text NOT NULL, id bigint NOT NULL, amount numeric(12,2) NOT NULL,
             status text NOT NULL, note text NOT NULL, placed_at timestamptz NOT NULL,
             PRIMARY KEY (tenant_id, id));"
    )))
    .execute(pool)
    .await?;
    let names: Vec<String> = (0..args.tenants)
        .map(|i| format!("tenant-{i:04}"))
        .collect();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {s}.events
         SELECT t, g, (g % 100000) / 100.0, (ARRAY['new','paid','shipped','done'])[1 + g % 4],
                md5(g::text) || ' ' || repeat('ferry ', 30) || (g % 1000),
                timestamptz '2020-01-01' + g * interval '10 seconds'
         FROM unnest($1::text[]) AS t, generate_series(1, $2) AS g"
    )))
    .bind(&names)
    .bind(i64::try_from(per_tenant).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    for sql in [
        format!("VACUUM ANALYZE {s}.events"),
        "CHECKPOINT".to_owned(),
    ] {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(pool).await?;
    }
    let rows = (per_tenant * args.tenants) as f64;
    let relation: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT pg_total_relation_size('{s}.events')"
    )))
    .fetch_one(pool)
    .await?;
    Ok(Dataset {
        names,
        per_tenant,
        rows,
        relation,
    })
}

/// One timed `COPY (SELECT * FROM events) TO STDOUT` into a local file.
async fn export_ceiling(
    pool: &sqlx::PgPool,
    s: &str,
    dir: &std::path::Path,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut out = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(dir.join("export.copy")).await?,
    );
    let export = format!("COPY (SELECT * FROM {s}.events) TO STDOUT");
    let mut stream = pool.copy_out_raw(&export).await?;
    while let Some(chunk) = stream.try_next().await? {
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    drop(out);
    Ok(started.elapsed())
}

/// The tiering migration over `events`, on a fresh SQLite control store.
struct Bench {
    store: Arc<dyn ControlStore>,
    migration: MigrationId,
    tenants: Vec<TenantId>,
    tiering: Arc<Tiering>,
}

async fn open_tiering(
    pool: &sqlx::PgPool,
    schema: &SqlIdent,
    dir: &std::path::Path,
    cold_dir: &std::path::Path,
    data: &Dataset,
) -> anyhow::Result<Bench> {
    let store = ferry_store::open(
        &format!("sqlite://{}", dir.join("ferry.db").display()),
        &ferry_store::StoreOptions::default(),
    )
    .await?;
    let m = MigrationId::new("bench_tier").expect("a valid id");
    store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::Tiering,
            description: "bench".into(),
            config: serde_json::json!({
                "schema": schema.as_str(), "table": "events", "tenant_column": "tenant_id",
                "age_column": "placed_at", "cold_url": format!("file://{}", cold_dir.display()),
            }),
            created_by: "bench".into(),
        })
        .await?;
    let tenants: Vec<TenantId> = data
        .names
        .iter()
        .map(|n| TenantId::new(n.clone()).expect("generated ids are valid"))
        .collect();
    store
        .register_tenants(
            &m,
            &tenants
                .iter()
                .map(|t| TenantSize {
                    tenant: t.clone(),
                    rows: data.per_tenant,
                })
                .collect::<Vec<_>>(),
        )
        .await?;
    let tiering = Arc::new(Tiering::open(store.clone(), &m, pool.clone()).await?);
    Ok(Bench {
        store,
        migration: m,
        tenants,
        tiering,
    })
}

/// The archive's wall time, and where its time went summed over the tenants.
struct ArchiveTimes {
    took: Duration,
    read_s: f64,
    write_s: f64,
    commit_s: f64,
}

/// Archives every tenant, two at a time.
async fn archive_all(bench: &Bench, bar: &indicatif::ProgressBar) -> anyhow::Result<ArchiveTimes> {
    let cutoff = "2030-01-01T00:00:00Z";
    let (mut read_s, mut write_s, mut commit_s) = (0.0, 0.0, 0.0);
    let started = Instant::now();
    let mut queue = bench.tenants.clone();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < 2 {
            let Some(t) = queue.pop() else { break };
            let tiering = bench.tiering.clone();
            running.spawn(async move { tiering.archive(&t, cutoff).await });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let report = done.context("join an archive task")??;
        read_s += report.read.as_secs_f64();
        write_s += report.write.as_secs_f64();
        commit_s += report.commit.as_secs_f64();
        bar.inc(report.rows);
    }
    Ok(ArchiveTimes {
        took: started.elapsed(),
        read_s,
        write_s,
        commit_s,
    })
}

/// `samples` pseudo-random keys (a fixed sequence, so runs compare), each an archived row.
fn sample_keys(
    tenants: &[TenantId],
    per_tenant: u64,
    samples: u64,
) -> Vec<(TenantId, Vec<ferry_tier::KeyValue>)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut keys = Vec::new();
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = tenants[(x % tenants.len() as u64) as usize].clone();
        let id = 1 + (x >> 20) % per_tenant;
        keys.push((t, vec![ferry_tier::KeyValue::Int(id as i64)]));
    }
    keys
}

/// Each key read from the cold tier, then each from the hot table; both latencies sorted.
async fn point_reads(
    tiering: &Tiering,
    keys: &[(TenantId, Vec<ferry_tier::KeyValue>)],
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut cold = Vec::with_capacity(keys.len());
    for (t, k) in keys {
        let started = Instant::now();
        let answer = tiering.cold_get(t, k).await?;
        cold.push(started.elapsed());
        anyhow::ensure!(
            matches!(answer, ferry_tier::ColdAnswer::Archived(Some(_))),
            "an archived key was not found in the cold tier"
        );
    }
    let mut hot = Vec::with_capacity(keys.len());
    for (t, k) in keys {
        let started = Instant::now();
        tiering
            .hot
            .get(t, k)
            .await?
            .context("a hot key was not found")?;
        hot.push(started.elapsed());
    }
    cold.sort();
    hot.sort();
    Ok((cold, hot))
}

/// Total time of the second round of reads through a `TieredTable` in `legacy`, and of the
/// direct query it wraps, on the same keys.
async fn routed_reads(
    bench: &Bench,
    pool: &sqlx::PgPool,
    s: &str,
    keys: &[(TenantId, Vec<ferry_tier::KeyValue>)],
) -> anyhow::Result<(Duration, Duration)> {
    let router = Arc::new(
        Router::start(
            bench.store.clone(),
            RouterSettings::new(RouterId::new("bench").expect("a valid id"), "bench"),
        )
        .await?,
    );
    let table = TieredTable::new(bench.tiering.clone(), router.clone());
    let direct_sql = format!(
        "SELECT to_jsonb(t)::text FROM {s}.events AS t WHERE t.tenant_id = $1 AND t.id = $2"
    );
    let texts: Vec<(TenantId, String)> = keys
        .iter()
        .map(|(t, k)| (t.clone(), k[0].to_text()))
        .collect();
    let (mut routed, mut direct) = (Duration::ZERO, Duration::ZERO);
    // Two rounds (the first warms caches), and each key read first one way, then the other,
    // alternating, so neither side always pays for a cold page.
    for round in 0..2 {
        for (i, (t, id)) in texts.iter().enumerate() {
            let numeric: i64 = id.parse()?;
            for routed_first in [i % 2 == 0, i % 2 == 1] {
                let started = Instant::now();
                if routed_first {
                    table
                        .get(t, &[id.as_str()])
                        .await?
                        .context("a routed read found nothing")?;
                    if round == 1 {
                        routed += started.elapsed();
                    }
                } else {
                    sqlx::query_scalar::<_, String>(AssertSqlSafe(direct_sql.clone()))
                        .bind(t.as_str())
                        .bind(numeric)
                        .fetch_one(pool)
                        .await?;
                    if round == 1 {
                        direct += started.elapsed();
                    }
                }
            }
        }
    }
    drop(table);
    if let Ok(router) = Arc::try_unwrap(router) {
        router.shutdown().await?;
    }
    Ok((routed, direct))
}

/// Enqueues `updates` changes to the first tenant's archived rows, then times applying them.
async fn apply_updates(
    bench: &Bench,
    updates: u64,
    per_tenant: u64,
) -> anyhow::Result<(u64, Duration)> {
    let t = &bench.tenants[0];
    for i in 0..updates {
        let id = 1 + (i * 7919) % per_tenant;
        let image = serde_json::json!({
            "tenant_id": t.as_str(), "id": id, "amount": "1.00", "status": "edited",
            "note": format!("edited {i}"), "placed_at": "2020-01-01T00:00:00Z",
        });
        bench
            .store
            .enqueue_update(
                &bench.migration,
                t,
                &format!("[\"{id}\"]"),
                "upsert",
                &image,
            )
            .await?;
    }
    let started = Instant::now();
    let applied = bench.tiering.apply_buffer(t).await?;
    Ok((applied, started.elapsed()))
}

/// Everything the bench measured, for its report.
struct Measured {
    tenants: u64,
    data: Dataset,
    ceiling: Duration,
    archive: ArchiveTimes,
    parquet: u64,
    cold: Vec<Duration>,
    hot: Vec<Duration>,
    /// Keys read each way in the routed-against-direct comparison.
    reads: usize,
    routed: Duration,
    direct: Duration,
    applied: u64,
    apply: Duration,
}

fn report(m: &Measured) -> Report {
    let rows = m.data.rows;
    let (ceiling, archive) = (m.ceiling, m.archive.took);
    let (cold, hot) = (&m.cold, &m.hot);
    let mut report = Report::new("tier");
    report.figure("rows", rows);
    report.figure("tenants", m.tenants as f64);
    report.figure("relation_bytes", m.data.relation as f64);
    report.figure("parquet_bytes", m.parquet as f64);
    report.figure("ceiling_rows_per_s", rows / ceiling.as_secs_f64().max(1e-9));
    report.figure("archive_rows_per_s", rows / archive.as_secs_f64().max(1e-9));
    // Summed over the tenants (two run at once): where the archive's time goes.
    report.figure("archive_read_s", m.archive.read_s);
    report.figure("archive_write_s", m.archive.write_s);
    report.figure("archive_commit_s", m.archive.commit_s);
    report.figure("cold_get_p50_us", percentile(cold, 0.5));
    report.figure("cold_get_p99_us", percentile(cold, 0.99));
    report.figure("hot_get_p50_us", percentile(hot, 0.5));
    report.figure("hot_get_p99_us", percentile(hot, 0.99));
    report.figure(
        "routed_get_mean_us",
        m.routed.as_secs_f64() * 1e6 / m.reads as f64,
    );
    report.figure(
        "direct_get_mean_us",
        m.direct.as_secs_f64() * 1e6 / m.reads as f64,
    );
    report.figure("buffer_applied", m.applied as f64);
    report.figure(
        "buffer_applied_per_s",
        m.applied as f64 / m.apply.as_secs_f64().max(1e-9),
    );
    report.ratio(
        "archive_vs_ceiling",
        ceiling.as_secs_f64() / archive.as_secs_f64().max(1e-9),
    );
    report.ratio(
        "size_reduction",
        m.data.relation as f64 / (m.parquet as f64).max(1.0),
    );
    report.ratio(
        "cold_vs_hot_p50",
        percentile(cold, 0.5) / percentile(hot, 0.5).max(1e-9),
    );
    report.ratio(
        "cold_vs_hot_p99",
        percentile(cold, 0.99) / percentile(hot, 0.99).max(1e-9),
    );
    report.ratio(
        "routed_vs_direct",
        m.routed.as_secs_f64() / m.direct.as_secs_f64().max(1e-9),
    );
    report
}
