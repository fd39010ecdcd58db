//! `ferry demo`: a thousand tenants moved through every phase on a throwaway embedded store.
//!
//! The story: two application processes (in-process routers) follow the phases while an
//! operator moves a canary cohort and then everyone else, with pauses and rollbacks on the
//! way. Every step waits for both routers to acknowledge it. At the end the audit log is
//! replayed against the stored phases; any inconsistency fails the demo.
//!
//! The demo has no database to copy from: where a tenant needs a backfill, it records the
//! progress the copier would report, and says so (`ferry copy run` does it for real). The
//! application's requests are simulated too, but each one is a real route decision taken by
//! a router from its cached phases, and counted like any other (so the dashboard's routing
//! charts have something to show).
//!
//! With `--serve ADDR`, `ferry serve`'s API, metrics and dashboard run over the demo's store
//! while it runs; `--step-delay-ms` slows the story down enough to watch it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_domain::{Action, Cohort, MigrationId, Percent, Phase, RouterId, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request, RolloutReport};
use ferry_move::RouteDecision;
use ferry_router::{RouteOp, Router, RouterSettings};
use ferry_store::{
    BackfillProgress, ControlStore, CopyDirection, MigrationKind, NewMigration, StoreOptions,
    TenantQuery, TenantSize,
};
use indicatif::ProgressBar;

use crate::args::{DemoArgs, Global};
use crate::context::{self, Context};
use crate::output;

/// A deterministic generator, so `--seed` reproduces a run exactly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
}

/// Pareto-distributed row counts: most tenants are small, a few are huge, as in real SaaS.
fn tenant_sizes(n: usize, seed: u64) -> Vec<TenantSize> {
    let mut rng = SplitMix(seed);
    (0..n)
        .map(|i| {
            let rows = (40.0 / rng.unit().powf(1.0 / 1.1)).min(5_000_000.0) as u64;
            TenantSize {
                tenant: TenantId::new(format!("tenant-{:04}", i + 1))
                    .expect("generated tenant ids are valid"),
                rows,
            }
        })
        .collect()
}

struct Demo {
    store: Arc<dyn ControlStore>,
    engine: PhaseEngine,
    migration: MigrationId,
    actor: String,
    bar: ProgressBar,
    steps: usize,
    /// The application processes: each routes simulated requests after every step.
    routers: Vec<Router>,
    tenants: Vec<TenantId>,
    traffic: SplitMix,
    step_delay: Duration,
}

impl Demo {
    fn say(&self, line: impl AsRef<str>) {
        self.bar.suspend(|| println!("{}", line.as_ref()));
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

    /// Applies an action to a cohort, waits until both routers acknowledge it, and narrates.
    async fn step(
        &mut self,
        label: &str,
        cohort: &Cohort,
        action: Action,
        reason: &str,
    ) -> anyhow::Result<RolloutReport> {
        let report = self
            .engine
            .rollout(
                &self.migration,
                cohort,
                action,
                &self.request(reason),
                |_, _| {},
            )
            .await
            .with_context(|| format!("{label}: {action}"))?;
        let version = report.change_version();
        if version > 0 {
            let ack = self
                .engine
                .wait_acknowledged(version, Duration::from_secs(30))
                .await
                .context("wait for the routers")?;
            anyhow::ensure!(
                ack.effective(),
                "{label}: routers {:?} did not acknowledge change {version}",
                ack.lagging
            );
        }
        self.steps += 1;
        self.serve_requests(200)?;
        if !self.step_delay.is_zero() {
            tokio::time::sleep(self.step_delay).await;
        }
        let mut moves: std::collections::BTreeMap<(Phase, Phase), usize> = Default::default();
        for m in &report.moved {
            *moves.entry((m.from.phase, m.to_phase)).or_default() += 1;
        }
        let moved: Vec<String> = moves
            .iter()
            .map(|((from, to), n)| {
                if from == to {
                    format!("{n} {action}d in {from}")
                } else {
                    format!("{n} {from}→{to}")
                }
            })
            .collect();
        let mut line = format!(
            "  {label:<9} {action:<8} {}",
            if moved.is_empty() {
                "nothing moved".to_owned()
            } else {
                moved.join(", ")
            }
        );
        for (reason, n) in report.refusal_summary() {
            line.push_str(&format!("; refused {n}: {reason}"));
        }
        self.say(line);
        self.update_bar().await?;
        Ok(report)
    }

    /// Each router routes `n` simulated requests (4 reads to 1 write) for random tenants, by
    /// the phase in its cache, counting each decision.
    fn serve_requests(&mut self, n: usize) -> anyhow::Result<()> {
        for router in &self.routers {
            let snapshot = router.snapshot()?;
            for _ in 0..n {
                let pick = self.traffic.next();
                let tenant = &self.tenants[(pick % self.tenants.len() as u64) as usize];
                let phase = snapshot
                    .phase(self.migration.as_str(), tenant.as_str())
                    .phase;
                let (op, decision) = if pick.is_multiple_of(5) {
                    (RouteOp::Write, RouteDecision::write(phase))
                } else {
                    (RouteOp::Read, RouteDecision::read(phase))
                };
                let (reason, phase) = decision.reason_label();
                router.record_route(
                    self.migration.as_str(),
                    op,
                    phase,
                    decision.path_label(),
                    reason,
                );
            }
        }
        Ok(())
    }

    /// Records, for every tenant of the cohort now in dual_write, the backfill the copier
    /// would have done.
    async fn backfill(&self, members: &[TenantId]) -> anyhow::Result<usize> {
        let mut done = 0;
        for t in members {
            let record = self.store.tenant(&self.migration, t).await?;
            if record.state.phase != Phase::DualWrite || record.state.paused {
                continue;
            }
            self.store
                .record_backfill(&BackfillProgress {
                    migration: self.migration.clone(),
                    tenant: t.clone(),
                    direction: CopyDirection::Forward,
                    rows_done: record.rows,
                    rows_total: record.rows,
                    complete: true,
                    last_key: None,
                    batch_size: 0,
                    rows_per_s: 0.0,
                    throttled: None,
                    updated_at: None,
                })
                .await?;
            done += 1;
        }
        Ok(done)
    }

    /// Advances the cohort's unfinished members until every one is complete, backfilling as
    /// needed, calling `events` after each round so the story can pause, roll back and resume
    /// tenants.
    async fn drive(
        &mut self,
        label: &str,
        cohort: Cohort,
        mut events: impl AsyncEvents,
    ) -> anyhow::Result<()> {
        let unfinished = |records: Vec<ferry_store::TenantRecord>| -> Vec<TenantId> {
            records
                .into_iter()
                .filter(|t| t.state.phase != Phase::Complete)
                .map(|t| t.tenant)
                .collect()
        };
        let members = unfinished(self.store.cohort(&self.migration, &cohort).await?);
        self.say(format!("{label}: {} tenants to move", members.len()));
        for round in 0.. {
            anyhow::ensure!(round < 40, "{label}: cohort did not complete in 40 rounds");
            let remaining = unfinished(
                self.store
                    .cohort(&self.migration, &Cohort::Explicit(members.clone()))
                    .await?,
            );
            if remaining.is_empty() {
                break;
            }
            let backfilled = self.backfill(&remaining).await?;
            if backfilled > 0 {
                self.say(format!(
                    "  {label:<9} copier   {backfilled} backfilled (simulated: the demo has no database to copy)"
                ));
            }
            self.step(
                label,
                &Cohort::Explicit(remaining),
                Action::Advance,
                "rollout",
            )
            .await?;
            events.after(self, round).await?;
        }
        Ok(())
    }

    async fn update_bar(&self) -> anyhow::Result<()> {
        let status = self.store.status().await?;
        let position: u64 = status
            .iter()
            .map(|c| c.tenants * c.phase.ordinal() as u64)
            .sum();
        self.bar.set_position(position);
        Ok(())
    }
}

/// Story events injected between rounds.
trait AsyncEvents {
    async fn after(&mut self, demo: &mut Demo, round: usize) -> anyhow::Result<()>;
}

/// Canary: pause three tenants in shadow, roll two back from target_primary, resume.
struct CanaryStory {
    paused: Vec<TenantId>,
}

impl AsyncEvents for CanaryStory {
    async fn after(&mut self, demo: &mut Demo, round: usize) -> anyhow::Result<()> {
        match round {
            1 => {
                let shadow = tenants_in(demo, Phase::Shadow, 3).await?;
                demo.step(
                    "canary",
                    &Cohort::Explicit(shadow.clone()),
                    Action::Pause,
                    "on-call is investigating latency",
                )
                .await?;
                self.paused = shadow;
            }
            2 => {
                let primary = tenants_in(demo, Phase::TargetPrimary, 2).await?;
                demo.step(
                    "canary",
                    &Cohort::Explicit(primary),
                    Action::Rollback,
                    "fallback rate above 1%",
                )
                .await?;
            }
            3 => {
                demo.step(
                    "canary",
                    &Cohort::Explicit(self.paused.clone()),
                    Action::Resume,
                    "latency explained",
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The rest: pause five early, roll three back from shadow, resume the five later.
struct FleetStory {
    paused: Vec<TenantId>,
}

impl AsyncEvents for FleetStory {
    async fn after(&mut self, demo: &mut Demo, round: usize) -> anyhow::Result<()> {
        match round {
            0 => {
                let dual = tenants_in(demo, Phase::DualWrite, 5).await?;
                demo.step(
                    "fleet",
                    &Cohort::Explicit(dual.clone()),
                    Action::Pause,
                    "customer freeze window",
                )
                .await?;
                self.paused = dual;
            }
            1 => {
                let shadow = tenants_in(demo, Phase::Shadow, 3).await?;
                demo.step(
                    "fleet",
                    &Cohort::Explicit(shadow),
                    Action::Rollback,
                    "shadow reads mismatched",
                )
                .await?;
            }
            3 => {
                demo.step(
                    "fleet",
                    &Cohort::Explicit(self.paused.clone()),
                    Action::Resume,
                    "freeze over",
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

async fn tenants_in(demo: &Demo, phase: Phase, n: u64) -> anyhow::Result<Vec<TenantId>> {
    Ok(demo
        .store
        .tenants(
            &demo.migration,
            &TenantQuery {
                phase: Some(phase),
                paused: Some(false),
                limit: Some(n),
                ..TenantQuery::default()
            },
        )
        .await?
        .into_iter()
        .map(|t| t.tenant)
        .collect())
}

pub async fn run(global: &Global, args: &DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.tenants >= 50,
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
    store
        .create_migration(&NewMigration {
            id: migration.clone(),
            kind: MigrationKind::TenantMove,
            description: "orders: shared table -> schema per tenant".into(),
            config: serde_json::json!({"table": "orders", "tenant_column": "tenant_id", "target": "schema per tenant"}),
            created_by: "demo".into(),
        })
        .await?;
    let sizes = tenant_sizes(args.tenants, args.seed);
    store.register_tenants(&migration, &sizes).await?;
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

    let mut routers = Vec::new();
    for i in 1..=2 {
        let settings = RouterSettings {
            heartbeat: Duration::from_millis(100),
            ..RouterSettings::new(
                RouterId::new(format!("demo-app-{i}")).expect("a valid router id"),
                "ferry demo, in-process",
            )
        };
        let handle = ferry_store::open(&url, &options).await?;
        routers.push(Router::start(handle, settings).await?);
    }
    println!(
        "2 application routers following the phases; every step waits for both to acknowledge\n"
    );

    let server = match args.serve {
        Some(addr) => Some(start_server(store.clone(), addr).await?),
        None => None,
    };

    let bar = output::progress((args.tenants * (Phase::ALL.len() - 1)) as u64, "phases");
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
    // What a router sees now, straight from its cache.
    let sample = &sizes[0].tenant;
    let seen = routers[0].phase(migration.as_str(), sample.as_str())?;
    println!(
        "\n{} routes {sample} by phase {} (from its cache)",
        routers[0].id(),
        seen.phase
    );
    let ctx = Context::new(store.clone(), demo.actor.clone());
    println!();
    crate::commands::status_report(&ctx).await?;
    for router in &routers {
        // The last counts reach the store before the routers leave (the dashboard keeps them).
        router.flush_route_counts().await?;
    }

    let verification = ferry_engine::verify_audit(store.as_ref(), &migration).await?;
    println!(
        "\naudit log: {} entries replayed for {} tenants, {} forced",
        output::count(verification.entries),
        output::count(verification.tenants),
        verification.forced
    );
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
    println!(
        "verified: every phase is explained by the audit log; {} steps in {:.1}s",
        demo.steps,
        started.elapsed().as_secs_f64()
    );
    if let Some(server) = server {
        if args.linger > 0 {
            println!(
                "still serving the dashboard for {}s (--linger); Ctrl-C to stop",
                args.linger
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(args.linger)) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        server.abort();
    }
    for router in routers {
        router.shutdown().await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts `ferry serve` over the demo's store with a fresh operator token, and prints where.
async fn start_server(
    store: Arc<dyn ControlStore>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ops = ferry_api::ops::Operations::new(store.clone());
    let (_, token) = ops
        .create_token("demo", "demo-operator", ferry_store::TokenScope::Operator)
        .await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let state = ferry_server::AppState::new(
        store,
        ferry_server::metrics::recorder(),
        ferry_server::ServeSettings {
            sample_every: Duration::from_secs(1),
            ..ferry_server::ServeSettings::default()
        },
    );
    println!("dashboard: http://{addr}/#token={token}");
    println!("api:       http://{addr}/api/v1/status (Authorization: Bearer {token})");
    Ok(tokio::spawn(async move {
        let never = std::future::pending::<()>();
        if let Err(e) = ferry_server::serve(listener, state, never).await {
            tracing::error!("the demo's server stopped: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::tenant_sizes;

    #[test]
    fn sizes_are_skewed_and_repeatable() {
        let a = tenant_sizes(1000, 42);
        assert_eq!(a, tenant_sizes(1000, 42));
        let mut rows: Vec<u64> = a.iter().map(|t| t.rows).collect();
        rows.sort_unstable();
        let median = rows[500];
        let largest = rows[999];
        assert!(rows[0] >= 40);
        assert!(largest > 50 * median, "median {median}, largest {largest}");
    }
}
