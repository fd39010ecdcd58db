//! `ferry bench control-store`: the control store at scale.
//!
//! For each store (SQLite always; PostgreSQL when a URL is given):
//!
//! - **cached phase lookup**: `Router::phase` over random tenants, 10% of them tracked, against
//!   a plain `HashMap<String, u8>` lookup of the same keys (ratio: how much the router's
//!   staleness check, snapshot clone and two-level map cost on top of a bare hash lookup);
//! - **10% rollout**: `PhaseEngine::rollout` (guards read in batches, optimistic updates,
//!   audit entries) against one bare `UPDATE` of the same rows with no guards and no audit;
//! - **status**: tenants per phase against a bare `count(*)` of the same table.

use std::hint::black_box;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_domain::{Action, Cohort, MigrationId, Percent, RouterId, SqlIdent, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine};
use ferry_router::{Router, RouterSettings};
use ferry_store::pg::PgStore;
use ferry_store::sqlite::SqliteStore;
use ferry_store::{ControlStore, MigrationKind, NewMigration, TenantSize};
use sqlx::AssertSqlSafe;

use super::Report;
use crate::args::ControlStoreBench;
use crate::output;

const LOOKUPS: usize = 2_000_000;
const REGISTER_CHUNK: usize = 50_000;

/// Where the raw baselines run.
enum Raw {
    Pg(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

impl Raw {
    async fn execute(&self, sql: &'static str, migration: &str) -> anyhow::Result<()> {
        match self {
            Raw::Pg(pool) => {
                sqlx::query(sql).bind(migration).execute(pool).await?;
            }
            Raw::Sqlite(pool) => {
                sqlx::query(sql).bind(migration).execute(pool).await?;
            }
        }
        Ok(())
    }
}

pub async fn run(args: ControlStoreBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.tenants >= 100, "--tenants must be at least 100");
    let mut report = Report::new("control-store");
    report.figure("tenants", args.tenants as f64);

    let dir = std::env::temp_dir().join(format!("ferry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let sqlite = SqliteStore::open(&dir.join("ferry.db"), true, Duration::from_secs(30))
        .await
        .context("open the SQLite store")?;
    let raw = Raw::Sqlite(sqlite.pool().clone());
    let result = measure("sqlite", Arc::new(sqlite), raw, &args, &mut report).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;

    match &args.postgres_url {
        Some(url) => {
            let schema = SqlIdent::new(format!("ferry_bench_{}", std::process::id()))
                .expect("a generated schema name is valid");
            let pg = PgStore::connect(url, &schema, Duration::from_secs(10))
                .await
                .context("open the PostgreSQL store")?;
            let pool = pg.pool().clone();
            let result = measure(
                "postgres",
                Arc::new(pg),
                Raw::Pg(pool.clone()),
                &args,
                &mut report,
            )
            .await;
            let drop = format!("DROP SCHEMA IF EXISTS {} CASCADE", schema.quoted());
            let _ = sqlx::query(AssertSqlSafe(drop)).execute(&pool).await;
            result?;
        }
        None if !args.json => {
            eprintln!("postgres: not measured (pass --postgres-url or set DATABASE_URL)");
        }
        None => {}
    }
    report.print(args.json)?;
    Ok(ExitCode::SUCCESS)
}

async fn measure(
    kind: &str,
    store: Arc<dyn ControlStore>,
    raw: Raw,
    args: &ControlStoreBench,
    report: &mut Report,
) -> anyhow::Result<()> {
    let m = MigrationId::new("bench").expect("a valid migration id");
    store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::Tiering,
            description: "bench".into(),
            config: serde_json::json!({}),
            created_by: "bench".into(),
        })
        .await?;
    let ids: Vec<TenantId> = (0..args.tenants)
        .map(|i| TenantId::new(format!("tenant-{i:07}")).expect("generated ids are valid"))
        .collect();
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        output::progress(ids.len() as u64, kind)
    };
    register(store.as_ref(), &m, &ids, &bar, kind, report).await?;
    let rollout = rollout(&store, &m, kind, report).await?;
    status(store.as_ref(), &raw, &m, kind, report).await?;
    lookups(&store, &m, &ids, kind, report).await?;
    bare_update(&raw, &m, rollout, kind, report).await
}

/// Registers every tenant, in chunks.
async fn register(
    store: &dyn ControlStore,
    m: &MigrationId,
    ids: &[TenantId],
    bar: &indicatif::ProgressBar,
    kind: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for chunk in ids.chunks(REGISTER_CHUNK) {
        let sizes: Vec<TenantSize> = chunk
            .iter()
            .enumerate()
            .map(|(i, t)| TenantSize {
                tenant: t.clone(),
                rows: (i as u64 * 7919) % 100_000,
            })
            .collect();
        store.register_tenants(m, &sizes).await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let register = started.elapsed().as_secs_f64();
    report.figure(
        format!("{kind}.register_tenants_per_s"),
        ids.len() as f64 / register,
    );
    Ok(())
}

/// 10% rollout through the engine; returns its seconds, for the bare UPDATE to compare.
async fn rollout(
    store: &Arc<dyn ControlStore>,
    m: &MigrationId,
    kind: &str,
    report: &mut Report,
) -> anyhow::Result<f64> {
    let engine = PhaseEngine::new(store.clone(), EngineSettings::default());
    let request = super::request();
    let cohort = Cohort::Percent(Percent::parse("10").expect("a valid percentage"));
    let started = Instant::now();
    let rolled = engine
        .rollout(m, &cohort, Action::Advance, &request, |_, _| {})
        .await?;
    let rollout = started.elapsed().as_secs_f64();
    anyhow::ensure!(rolled.refused.is_empty(), "bench rollout refused tenants");
    report.figure(
        format!("{kind}.rollout_10pct_tenants"),
        rolled.moved.len() as f64,
    );
    report.figure(format!("{kind}.rollout_10pct_s"), rollout);
    Ok(rollout)
}

/// Status over every tenant, against a bare count of the same table.
async fn status(
    store: &dyn ControlStore,
    raw: &Raw,
    m: &MigrationId,
    kind: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = Instant::now();
    black_box(store.status().await?);
    let status = started.elapsed().as_secs_f64();
    let started = Instant::now();
    raw.execute(
        "SELECT count(*) FROM ferry_tenant_phases WHERE migration_id = $1",
        m.as_str(),
    )
    .await?;
    let count = started.elapsed().as_secs_f64();
    report.figure(format!("{kind}.status_s"), status);
    report.figure(format!("{kind}.baseline_count_s"), count);
    report.ratio(format!("{kind}.status_vs_count"), status / count.max(1e-9));
    Ok(())
}

/// Cached lookups: 10% of tenants are tracked (in dual_write), the rest default to legacy.
async fn lookups(
    store: &Arc<dyn ControlStore>,
    m: &MigrationId,
    ids: &[TenantId],
    kind: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let router = Router::start(
        store.clone(),
        RouterSettings::new(RouterId::new("bench").expect("a valid router id"), "bench"),
    )
    .await?;
    let order = lookup_order(ids.len());
    let names: Vec<&str> = ids.iter().map(TenantId::as_str).collect();
    let started = Instant::now();
    for &i in &order {
        black_box(router.phase(m.as_str(), black_box(names[i]))?);
    }
    let lookup = started.elapsed().as_nanos() as f64 / order.len() as f64;
    let map: std::collections::HashMap<String, u8> = ids
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), (i % 6) as u8))
        .collect();
    let started = Instant::now();
    for &i in &order {
        black_box(map.get(black_box(names[i])));
    }
    let baseline = started.elapsed().as_nanos() as f64 / order.len() as f64;
    router.shutdown().await?;
    report.figure(format!("{kind}.lookup_ns"), lookup);
    report.figure(format!("{kind}.baseline_hashmap_lookup_ns"), baseline);
    report.ratio(
        format!("{kind}.lookup_vs_hashmap"),
        lookup / baseline.max(1e-9),
    );
    Ok(())
}

/// The bare UPDATE of the rollout's rows (moving them back, so it writes as many rows).
async fn bare_update(
    raw: &Raw,
    m: &MigrationId,
    rollout: f64,
    kind: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let sql = match raw {
        Raw::Pg(_) => {
            "UPDATE ferry_tenant_phases SET phase = 'legacy', version = version + 1 WHERE migration_id = $1 AND cohort_bucket < 1000"
        }
        Raw::Sqlite(_) => {
            "UPDATE ferry_tenant_phases SET phase = 'legacy', version = version + 1 WHERE migration_id = ?1 AND cohort_bucket < 1000"
        }
    };
    let started = Instant::now();
    raw.execute(sql, m.as_str()).await?;
    let bare = started.elapsed().as_secs_f64();
    report.figure(format!("{kind}.baseline_bare_update_10pct_s"), bare);
    report.ratio(
        format!("{kind}.rollout_vs_bare_update"),
        rollout / bare.max(1e-9),
    );
    Ok(())
}

/// A fixed pseudo-random visiting order, so both lookups see the same cache behaviour.
fn lookup_order(n: usize) -> Vec<usize> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..LOOKUPS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}
