//! `ferry demo`: real rows moved under live traffic, with nothing to set up.
//!
//! A throwaway PostgreSQL cluster (or `--data-url`), a fresh embedded control store, an
//! `items` table of tenants of skewed sizes moved to a second schema by a tenant move while
//! the history checker's clients write through two routers; the operator's story is in
//! `real_story.rs`. At the end the checker reads every key, the audit log is replayed, and
//! the demo exits non-zero on any anomaly or inconsistency.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_check::{AppPools, Report, Scenario, ScenarioSettings};
use ferry_domain::SqlIdent;
use ferry_store::{StoreOptions, TenantSize};
use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::real_story::Story;
use super::simulated::verify;
use super::tier_act::{self, TierSummary};
use super::{linger, start_server, tenant_sizes};
use crate::args::{DemoArgs, Global};
use crate::context::{self, Context};
use crate::{exit, output};

/// The sizes of a run.
pub(super) struct Scale {
    tenants: usize,
    clients: u32,
    smallest_tenant: f64,
    largest_tenant: f64,
    /// How long the operator watches the shadow phase's compared reads, per cohort.
    pub(super) watch: Duration,
    /// Rows of the tiering act's `events` table per tenant.
    events_per_tenant: i64,
}

impl Scale {
    pub(super) fn of(args: &DemoArgs) -> Scale {
        let (tenants, clients, smallest, largest, watch, events) = if args.quick {
            (30, 4, 300.0, 20_000.0, 3, 200)
        } else {
            (200, 8, 500.0, 150_000.0, 10, 600)
        };
        Scale {
            tenants: args.tenants.unwrap_or(tenants),
            clients,
            smallest_tenant: smallest,
            largest_tenant: largest,
            watch: Duration::from_secs(watch),
            events_per_tenant: events,
        }
    }
}

/// The one object `--json` prints.
#[derive(Serialize)]
struct Summary {
    rows_moved: u64,
    rows_seeded: u64,
    anomalies: ferry_check::Anomalies,
    operations: Operations,
    checker: Report,
    tiering: TierSummary,
    phase_changes: u64,
    seconds: f64,
}

/// What the application's requests did, summed over both routers' tables.
#[derive(Serialize, Default)]
struct Operations {
    reads_source: u64,
    reads_target: u64,
    writes_source: u64,
    writes_target: u64,
    fallbacks: u64,
    shadow_mismatches: u64,
    buffered: u64,
}

pub(super) async fn run(global: &Global, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let scale = Scale::of(args);
    anyhow::ensure!(
        scale.tenants >= 10,
        "--tenants must be at least 10 for the story to work"
    );
    let started = Instant::now();
    let temp = std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id()));
    std::fs::create_dir_all(&temp).with_context(|| format!("create {}", temp.display()))?;
    let path = args.store.clone().unwrap_or_else(|| temp.join("ferry.db"));
    anyhow::ensure!(
        !path.exists(),
        "{} already exists; the demo needs a fresh store (remove it or pick another --store)",
        path.display()
    );
    let (data_url, schema) = match &args.data_url {
        Some(url) => (url.clone(), format!("ferry_demo_{}", std::process::id())),
        None => (start_cluster(args.json).await?, "ferry_demo".to_owned()),
    };
    let place = Place {
        store_url: format!("sqlite://{}", path.display()),
        data_url,
        schema,
        work_dir: temp.clone(),
    };
    let result = run_in(global, args, &scale, &place, started).await;
    let _ = std::fs::remove_dir_all(&temp);
    result
}

/// Starts the throwaway cluster (stopped when the demo exits, however it exits).
async fn start_cluster(quiet: bool) -> anyhow::Result<String> {
    if !quiet {
        println!("starting a throwaway PostgreSQL with initdb and pg_ctl…");
    }
    let cluster = tokio::task::spawn_blocking(ferry_pg::start)
        .await
        .context("start a throwaway PostgreSQL")?
        .map_err(|e| anyhow::anyhow!("start a throwaway PostgreSQL: {e}"))?;
    if !quiet {
        println!(
            "PostgreSQL at {} (data in {})",
            cluster.url,
            cluster.data_dir.display()
        );
    }
    Ok(cluster.url)
}

/// Where a run keeps things: its store, its data, its schema, its files (segments).
struct Place {
    store_url: String,
    data_url: String,
    schema: String,
    work_dir: PathBuf,
}

async fn run_in(
    global: &Global,
    args: &DemoArgs,
    scale: &Scale,
    place: &Place,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let scenario = Arc::new(
        setup(
            args,
            scale,
            &place.store_url,
            &place.data_url,
            &place.schema,
        )
        .await?,
    );
    let outcome = play(global, args, &scenario, &place.work_dir, started).await;
    if args.data_url.is_some()
        && let Err(e) = scenario.drop_schemas().await
    {
        eprintln!("warning: could not drop the demo's schemas: {e}");
    }
    for router in &scenario.routers {
        let _ = router.flush_route_counts().await;
    }
    outcome
}

/// The store, the data, the migration, the routers and their tables.
async fn setup(
    args: &DemoArgs,
    scale: &Scale,
    store_url: &str,
    data_url: &str,
    schema: &str,
) -> anyhow::Result<Scenario> {
    let options = StoreOptions::default();
    let store = ferry_store::open(store_url, &options)
        .await
        .context("open the demo store")?;
    let connect = async |what: &str| {
        ferry_copier::connect(data_url, "connect to the demo's database")
            .await
            .with_context(|| format!("connect {what}"))
    };
    let settings = ScenarioSettings {
        schema: SqlIdent::new(schema.to_owned()).context("name the demo's schema")?,
        tenants: scale.tenants,
        routers: 2,
        clients: scale.clients,
        moving: scale.tenants,
        keys_per_tenant: 3,
        duration: Duration::ZERO,
        fields: true,
    };
    let scenario = Scenario::setup(
        connect("the operator's pool").await?,
        AppPools {
            source: connect("the application's source pool").await?,
            target: connect("the application's target pool").await?,
        },
        store,
        // Each router on its own handle to the store, as separate processes would be.
        async || ferry_store::open(store_url, &StoreOptions::default()).await,
        settings,
    )
    .await
    .context("set up the demo's table and its move")?;
    if !args.json {
        println!("control store: {store_url} (embedded SQLite)");
    }
    Ok(scenario)
}

/// Fills the table: each tenant's rows (ids far above the clients' keys), and registers the
/// sizes. Returns the rows written.
async fn seed(scenario: &Scenario, sizes: &[TenantSize]) -> anyhow::Result<u64> {
    let table = format!("{}.items", scenario.settings.schema.quoted());
    let sql = format!(
        "INSERT INTO {table} (tenant_id, id, appends, version, note, amount, at, doc)
         SELECT $1, 1000000000000000 + i, 'seed', 1,
                CASE WHEN i % 3 = 0 THEN NULL WHEN i % 3 = 1 THEN '' ELSE 'order ' || i END,
                (i % 100000) * 0.125, timestamptz '2025-01-01 00:00:00+00' + i * interval '1 minute',
                json_build_object('sku', i % 97, 'qty', i % 5, 'gift', i % 7 = 0)
         FROM generate_series(1, $2::bigint) AS i"
    );
    let mut rows = 0;
    for size in sizes {
        let done = sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(size.tenant.as_str())
            .bind(size.rows as i64)
            .execute(&scenario.pool)
            .await
            .with_context(|| format!("fill tenant {}", size.tenant))?;
        rows += done.rows_affected();
    }
    sqlx::raw_sql(AssertSqlSafe(format!("ANALYZE {table}")))
        .execute(&scenario.pool)
        .await
        .context("analyze the demo's table")?;
    scenario
        .store
        .register_tenants(&scenario.migration, sizes)
        .await
        .context("register the tenants' sizes")?;
    Ok(rows)
}

/// Seeds, runs the clients and the operator's story, checks, reports.
async fn play(
    global: &Global,
    args: &DemoArgs,
    scenario: &Arc<Scenario>,
    work_dir: &Path,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let scale = Scale::of(args);
    let sizes: Vec<TenantSize> = tenant_sizes(
        scenario.tenants.len(),
        args.seed,
        scale.smallest_tenant,
        scale.largest_tenant,
    )
    .into_iter()
    .zip(&scenario.tenants)
    .map(|(s, t)| TenantSize {
        tenant: t.clone(),
        rows: s.rows,
    })
    .collect();
    let rows_seeded = seed(scenario, &sizes).await?;
    let server = match args.serve {
        Some(addr) => Some(start_server(scenario.store.clone(), addr).await?),
        None => None,
    };
    let actor = context::actor(global.actor.as_deref());
    let mut story = Story::new(scenario.clone(), actor.clone(), args, rows_seeded);
    story.say(format!(
        "{} tenants, {} rows; {} clients writing through 2 routers from now on",
        scenario.tenants.len(),
        output::count(rows_seeded),
        scenario.settings.clients
    ));
    let clients = scenario.start_clients();
    let played = story.play().await;
    story.finish();
    // The move's clients keep writing while the events table is tiered.
    let tiered = match played {
        Ok(()) => tier_act::run(
            scenario.clone(),
            work_dir,
            scale.events_per_tenant,
            actor.clone(),
            args.json,
        )
        .await
        .map(Some),
        Err(e) => Err(e),
    };
    let report = clients.finish().await?;
    let tiering = tiered?.unwrap_or_default();
    let summary = Summary {
        rows_moved: story.rows_moved,
        rows_seeded,
        anomalies: report.anomalies,
        operations: operations(scenario),
        checker: report,
        tiering,
        phase_changes: story.steps,
        seconds: started.elapsed().as_secs_f64(),
    };
    let consistent = conclude(args, scenario, &actor, &summary).await;
    if let Some(server) = server {
        linger(args.linger).await;
        server.abort();
    }
    consistent?;
    Ok(
        if summary.checker.passed() && summary.tiering.anomalies.total() == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(exit::ANOMALIES)
        },
    )
}

fn operations(scenario: &Scenario) -> Operations {
    use std::sync::atomic::Ordering::Relaxed;
    let mut ops = Operations::default();
    for table in &scenario.tables {
        let s = &table.stats;
        ops.reads_source += s.reads_source.load(Relaxed);
        ops.reads_target += s.reads_target.load(Relaxed);
        ops.writes_source += s.writes_source.load(Relaxed);
        ops.writes_target += s.writes_target.load(Relaxed);
        ops.fallbacks += s.fallbacks.load(Relaxed);
        ops.shadow_mismatches += s.shadow_mismatches.load(Relaxed);
        ops.buffered += s.buffered.load(Relaxed);
    }
    ops
}

/// Prints the end (or the JSON object) and replays the audit log.
async fn conclude(
    args: &DemoArgs,
    scenario: &Scenario,
    actor: &str,
    summary: &Summary,
) -> anyhow::Result<()> {
    if args.json {
        verify(&scenario.store, &scenario.migration, true).await?;
        return output::json(summary);
    }
    for router in &scenario.routers {
        router.flush_route_counts().await?;
    }
    println!();
    crate::commands::status_report(&Context::new(scenario.store.clone(), actor.to_owned())).await?;
    verify(&scenario.store, &scenario.migration, false).await?;
    let o = &summary.operations;
    println!(
        "\noperations per path: reads {} source / {} target, writes {} source / {} target, {} fallbacks, {} buffered",
        output::count(o.reads_source),
        output::count(o.reads_target),
        output::count(o.writes_source),
        output::count(o.writes_target),
        o.fallbacks,
        o.buffered
    );
    let t = &summary.tiering;
    let (to, ta) = (&t.operations, &t.anomalies);
    println!(
        "tiering: {} rows archived in {} segments, {} hot copies deleted, {} restored; {} writes: reads {} hot / {} cold, {} buffered, {} fallbacks",
        output::count(t.rows_archived),
        t.segments,
        output::count(t.hot_copies_deleted),
        output::count(t.rows_restored),
        output::count(t.writes),
        output::count(to.reads_hot),
        output::count(to.reads_cold),
        output::count(to.buffered),
        to.fallbacks
    );
    println!(
        "tiering anomalies: {} lost, {} resurrected, {} stale reads, {} failed requests",
        ta.lost, ta.resurrected, ta.stale_reads, ta.failed_requests
    );
    crate::check::print_outcome(&ferry_check::RunOutcome {
        report: summary.checker.clone(),
        phase_changes: summary.phase_changes,
        tenants_completed: scenario.tenants.len(),
    });
    println!(
        "{} rows moved in {:.0}s",
        output::count(summary.rows_moved),
        summary.seconds
    );
    Ok(())
}
