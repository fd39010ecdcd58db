//! `ferry demo --simulate`: a thousand tenants moved through every phase on a throwaway
//! embedded store, with no database.
//!
//! The story: two application processes (in-process routers) follow the phases while an
//! operator moves a canary cohort and then everyone else, with pauses and rollbacks on the
//! way. Every step waits for both routers to acknowledge it. At the end the audit log is
//! replayed against the stored phases; any inconsistency fails the demo.
//!
//! Where a tenant needs a backfill, it records the progress the copier would report, and says
//! so. The application's requests are simulated too, but each one is a real route decision
//! taken by a router from its cached phases, and counted like any other (so the dashboard's
//! routing charts have something to show).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_domain::{Cohort, MigrationId, Percent, Phase, RouterId, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine};
use ferry_router::{Router, RouterSettings};
use ferry_store::{ControlStore, MigrationKind, NewMigration, StoreOptions, TenantSize};

use super::story::{CanaryStory, Demo, FleetStory};
use super::{SplitMix, linger, start_server, tenant_sizes};
use crate::args::{DemoArgs, Global};
use crate::context::{self, Context};
use crate::output;

pub(super) async fn run(global: &Global, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    let tenants = args.tenants.unwrap_or(1000);
    anyhow::ensure!(
        tenants >= 50,
        "--tenants must be at least 50 for the story to work"
    );
    let started = Instant::now();
    let temp = std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id()));
    let path = match &args.store {
        Some(path) => path.clone(),
        None => {
            std::fs::create_dir_all(&temp).with_context(|| format!("create {}", temp.display()))?;
            temp.join("ferry.db")
        }
    };
    anyhow::ensure!(
        !path.exists(),
        "{} already exists; the demo needs a fresh store (remove it or pick another --store)",
        path.display()
    );
    let result = run_in(global, args, &path, started).await;
    if args.store.is_none() {
        let _ = std::fs::remove_dir_all(&temp);
    }
    result
}

async fn run_in(
    global: &Global,
    args: &DemoArgs,
    path: &std::path::Path,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let url = format!("sqlite://{}", path.display());
    let options = StoreOptions::default();
    let store = ferry_store::open(&url, &options)
        .await
        .context("open the demo store")?;
    println!("ferry demo on a fresh embedded store: {}", path.display());

    let migration = MigrationId::new("orders_move").expect("a valid migration id");
    let sizes = register_tenants(&store, &migration, args).await?;
    let routers = start_routers(&url, &options).await?;

    let server = match args.serve {
        Some(addr) => Some(start_server(store.clone(), addr).await?),
        None => None,
    };

    let bar = output::progress((sizes.len() * (Phase::ALL.len() - 1)) as u64, "phases");
    let mut demo = Demo {
        engine: PhaseEngine::new(store.clone(), EngineSettings::default()),
        store: store.clone(),
        migration: migration.clone(),
        actor: context::actor(global.actor.as_deref()),
        bar,
        steps: 0,
        routers,
        tenants: sizes.iter().map(|t| t.tenant.clone()).collect(),
        traffic: SplitMix(args.seed ^ 0x5eed),
        step_delay: Duration::from_millis(args.step_delay_ms),
    };
    let canary = Cohort::Percent(Percent::parse("5").expect("a valid percentage"));
    demo.drive("canary", canary, CanaryStory { paused: vec![] })
        .await?;
    demo.say("");
    demo.drive("fleet", Cohort::All, FleetStory { paused: vec![] })
        .await?;
    demo.bar.finish_and_clear();

    let routers = std::mem::take(&mut demo.routers);
    show_outcome(&store, &migration, &routers, &sizes[0].tenant, &demo.actor).await?;
    verify(&store, &migration, false).await?;
    println!(
        "verified: every phase is explained by the audit log; {} steps in {:.1}s",
        demo.steps,
        started.elapsed().as_secs_f64()
    );
    if let Some(server) = server {
        linger(args.linger).await;
        server.abort();
    }
    for router in routers {
        router.shutdown().await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the demo's migration and registers its tenants, of skewed sizes.
async fn register_tenants(
    store: &Arc<dyn ControlStore>,
    migration: &MigrationId,
    args: &DemoArgs,
) -> anyhow::Result<Vec<TenantSize>> {
    store
        .create_migration(&NewMigration {
            id: migration.clone(),
            kind: MigrationKind::TenantMove,
            description: "orders: shared table -> schema per tenant".into(),
            config: serde_json::json!({"table": "orders", "tenant_column": "tenant_id", "target": "schema per tenant"}),
            created_by: "demo".into(),
        })
        .await?;
    let sizes = tenant_sizes(args.tenants.unwrap_or(1000), args.seed, 40.0, 5e6);
    store.register_tenants(migration, &sizes).await?;
    let mut rows: Vec<u64> = sizes.iter().map(|t| t.rows).collect();
    rows.sort_unstable();
    println!(
        "{} tenants registered, {} rows in all: smallest {}, median {}, largest {}",
        output::count(rows.len() as u64),
        output::count(rows.iter().sum()),
        output::count(rows[0]),
        output::count(rows[rows.len() / 2]),
        output::count(rows[rows.len() - 1]),
    );
    Ok(sizes)
}

/// The two application processes, each a router on its own handle to the store.
async fn start_routers(url: &str, options: &StoreOptions) -> anyhow::Result<Vec<Router>> {
    let mut routers = Vec::new();
    for i in 1..=2 {
        let settings = RouterSettings {
            heartbeat: Duration::from_millis(100),
            ..RouterSettings::new(
                RouterId::new(format!("demo-app-{i}")).expect("a valid router id"),
                "ferry demo, in-process",
            )
        };
        let handle = ferry_store::open(url, options).await?;
        routers.push(Router::start(handle, settings).await?);
    }
    println!(
        "2 application routers following the phases; every step waits for both to acknowledge\n"
    );
    Ok(routers)
}

/// Prints how a router routes a tenant now and the full status, then sends the routers'
/// last route counts to the store.
async fn show_outcome(
    store: &Arc<dyn ControlStore>,
    migration: &MigrationId,
    routers: &[Router],
    sample: &TenantId,
    actor: &str,
) -> anyhow::Result<()> {
    // What a router sees now, straight from its cache.
    let seen = routers[0].phase(migration.as_str(), sample.as_str())?;
    println!(
        "\n{} routes {sample} by phase {} (from its cache)",
        routers[0].id(),
        seen.phase
    );
    let ctx = Context::new(store.clone(), actor.to_owned());
    println!();
    crate::commands::status_report(&ctx).await?;
    for router in routers {
        // The last counts reach the store before the routers leave (the dashboard keeps them).
        router.flush_route_counts().await?;
    }
    Ok(())
}

/// Replays the audit log against the stored phases and checks every tenant completed; any
/// inconsistency fails the demo.
pub(super) async fn verify(
    store: &Arc<dyn ControlStore>,
    migration: &MigrationId,
    quiet: bool,
) -> anyhow::Result<()> {
    let verification = ferry_engine::verify_audit(store.as_ref(), migration).await?;
    if !quiet {
        println!(
            "\naudit log: {} entries replayed for {} tenants, {} forced",
            output::count(verification.entries),
            output::count(verification.tenants),
            verification.forced
        );
    }
    if !verification.consistent() {
        for p in verification.problems.iter().take(10) {
            eprintln!("  inconsistent: {p}");
        }
        anyhow::bail!(
            "the audit log does not explain {} tenant phase(s)",
            verification.problems.len()
        );
    }
    let incomplete: u64 = store
        .status()
        .await?
        .iter()
        .filter(|c| c.phase != Phase::Complete)
        .map(|c| c.tenants)
        .sum();
    anyhow::ensure!(incomplete == 0, "{incomplete} tenants did not complete");
    Ok(())
}
