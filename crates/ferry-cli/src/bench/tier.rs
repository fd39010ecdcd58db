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
use ferry_store::{MigrationKind, NewMigration, TenantSize};
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

    // The export ceiling: COPY … TO STDOUT into a file.
    say("ceiling: COPY (SELECT …) TO a file…".into());
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
    let ceiling = started.elapsed();

    // Ferry: every tenant archived, two at a time.
    let store = ferry_store::open(
        &format!("sqlite://{}", dir.join("ferry.db").display()),
        &ferry_store::StoreOptions::default(),
    )
    .await?;
    let m = MigrationId::new("bench_tier").expect("a valid id");
    let cold_dir = dir.join("cold");
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
    let tenants: Vec<TenantId> = names
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
                    rows: per_tenant,
                })
                .collect::<Vec<_>>(),
        )
        .await?;
    let tiering = Arc::new(Tiering::open(store.clone(), &m, pool.clone()).await?);
    say("ferry: archiving every tenant…".into());
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        output::progress(rows as u64, "archive")
    };
    let cutoff = "2030-01-01T00:00:00Z";
    let (mut read_s, mut write_s, mut commit_s) = (0.0, 0.0, 0.0);
    let started = Instant::now();
    let mut queue = tenants.clone();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < 2 {
            let Some(t) = queue.pop() else { break };
            let tiering = tiering.clone();
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
    let archive = started.elapsed();
    bar.finish_and_clear();
    let parquet = dir_bytes(&cold_dir);

    // Point reads, cold against hot, on the same random keys.
    say("point reads: cold against hot…".into());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut keys = Vec::new();
    for _ in 0..args.samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = tenants[(x % tenants.len() as u64) as usize].clone();
        let id = 1 + (x >> 20) % per_tenant;
        keys.push((t, vec![ferry_tier::KeyValue::Int(id as i64)]));
    }
    let mut cold = Vec::with_capacity(keys.len());
    for (t, k) in &keys {
        let started = Instant::now();
        let answer = tiering.cold_get(t, k).await?;
        cold.push(started.elapsed());
        anyhow::ensure!(
            matches!(answer, ferry_tier::ColdAnswer::Archived(Some(_))),
            "an archived key was not found in the cold tier"
        );
    }
    let mut hot = Vec::with_capacity(keys.len());
    for (t, k) in &keys {
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

    // A TieredTable read in legacy against the direct query it wraps.
    say("router: TieredTable in legacy against a direct query…".into());
    let router = Arc::new(
        Router::start(
            store.clone(),
            RouterSettings::new(RouterId::new("bench").expect("a valid id"), "bench"),
        )
        .await?,
    );
    let table = TieredTable::new(tiering.clone(), router.clone());
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

    // Buffered updates applied per second: one tenant's changes, spread over its rows.
    say("buffer: applying buffered updates…".into());
    let t = &tenants[0];
    for i in 0..args.updates {
        let id = 1 + (i * 7919) % per_tenant;
        let image = serde_json::json!({
            "tenant_id": t.as_str(), "id": id, "amount": "1.00", "status": "edited",
            "note": format!("edited {i}"), "placed_at": "2020-01-01T00:00:00Z",
        });
        store
            .enqueue_update(&m, t, &format!("[\"{id}\"]"), "upsert", &image)
            .await?;
    }
    let started = Instant::now();
    let applied = tiering.apply_buffer(t).await?;
    let apply = started.elapsed();

    let mut report = Report::new("tier");
    report.figure("rows", rows);
    report.figure("tenants", args.tenants as f64);
    report.figure("relation_bytes", relation as f64);
    report.figure("parquet_bytes", parquet as f64);
    report.figure("ceiling_rows_per_s", rows / ceiling.as_secs_f64().max(1e-9));
    report.figure("archive_rows_per_s", rows / archive.as_secs_f64().max(1e-9));
    // Summed over the tenants (two run at once): where the archive's time goes.
    report.figure("archive_read_s", read_s);
    report.figure("archive_write_s", write_s);
    report.figure("archive_commit_s", commit_s);
    report.figure("cold_get_p50_us", percentile(&cold, 0.5));
    report.figure("cold_get_p99_us", percentile(&cold, 0.99));
    report.figure("hot_get_p50_us", percentile(&hot, 0.5));
    report.figure("hot_get_p99_us", percentile(&hot, 0.99));
    report.figure(
        "routed_get_mean_us",
        routed.as_secs_f64() * 1e6 / texts.len() as f64,
    );
    report.figure(
        "direct_get_mean_us",
        direct.as_secs_f64() * 1e6 / texts.len() as f64,
    );
    report.figure("buffer_applied", applied as f64);
    report.figure(
        "buffer_applied_per_s",
        applied as f64 / apply.as_secs_f64().max(1e-9),
    );
    report.ratio(
        "archive_vs_ceiling",
        ceiling.as_secs_f64() / archive.as_secs_f64().max(1e-9),
    );
    report.ratio(
        "size_reduction",
        relation as f64 / (parquet as f64).max(1.0),
    );
    report.ratio(
        "cold_vs_hot_p50",
        percentile(&cold, 0.5) / percentile(&hot, 0.5).max(1e-9),
    );
    report.ratio(
        "cold_vs_hot_p99",
        percentile(&cold, 0.99) / percentile(&hot, 0.99).max(1e-9),
    );
    report.ratio(
        "routed_vs_direct",
        routed.as_secs_f64() / direct.as_secs_f64().max(1e-9),
    );
    Ok(report)
}
