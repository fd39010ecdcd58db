//! The workload through a tenant move: 8 clients on two routers write 50 tenants while a
//! driver moves 30% of them through the phases with the copier (forward copies, reverse copies
//! after stepping back from `target_only`) and rolls some back; at the end the checker reads
//! every key. All anomaly counts must be zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferry_check::{ClientSettings, MovedTarget, Report, Target, check, run_client};
use ferry_copier::{Copier, Outcome};
use ferry_domain::{Action, MigrationId, Phase, RouterId, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_move::MovedTable;
use ferry_router::{Router, RouterSettings};
use ferry_store::{CopyDirection, MigrationKind, NewMigration, TenantSize};
use ferry_testkit::{TestDb, TestStore};
use sqlx::PgPool;

/// The length of the run: `FERRY_CHECK_SECS` (the long tier sets minutes), 60 s by default.
fn run_for() -> Duration {
    let secs = std::env::var("FERRY_CHECK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

fn request() -> Request {
    Request {
        actor: "driver".into(),
        reason: "workload".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    }
}

struct World {
    _data: TestDb,
    store: TestStore,
    pool: PgPool,
    m: MigrationId,
    tenants: Vec<TenantId>,
    routers: Vec<Arc<Router>>,
    tables: Vec<Arc<MovedTable>>,
    copier: Copier,
    engine: PhaseEngine,
}

async fn world(tenants: usize, routers: usize) -> World {
    let data = TestDb::new().await;
    let pool = ferry_copier::connect(data.url(), "connect").await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.items (
             tenant_id text NOT NULL, id bigint NOT NULL, appends text NOT NULL DEFAULT '',
             version bigint NOT NULL DEFAULT 1, PRIMARY KEY (tenant_id, id))",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = TestStore::postgres().await;
    let m = MigrationId::new("items_move").unwrap();
    store
        .store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::TenantMove,
            description: String::new(),
            config: serde_json::json!({
                "source": {"schema": "public", "table": "items"},
                "target": {"schema": "moved", "table": "items"},
                "tenant_column": "tenant_id", "version_column": "version",
                "copy": {"min_batch": 10, "max_batch": 200, "start_batch": 50},
                "backpressure": {"latency_factor": 0},
            }),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let tenants: Vec<TenantId> = (0..tenants)
        .map(|i| TenantId::new(format!("t{i:02}")).unwrap())
        .collect();
    let sizes: Vec<TenantSize> = tenants
        .iter()
        .map(|t| TenantSize {
            tenant: t.clone(),
            rows: 10,
        })
        .collect();
    store.store.register_tenants(&m, &sizes).await.unwrap();
    let copier = Copier::open(
        store.store.clone(),
        PhaseEngine::new(store.store.clone(), EngineSettings::default()),
        &m,
        pool.clone(),
        pool.clone(),
        true,
    )
    .await
    .unwrap();
    let mut all_routers = Vec::new();
    let mut tables = Vec::new();
    for r in 0..routers {
        let router = Arc::new(
            Router::start(
                store.reopen().await,
                RouterSettings {
                    heartbeat: Duration::from_millis(50),
                    ..RouterSettings::new(RouterId::new(format!("app-{r}")).unwrap(), "test")
                },
            )
            .await
            .unwrap(),
        );
        let table = MovedTable::open(
            router.clone(),
            store.store.clone(),
            &m,
            pool.clone(),
            pool.clone(),
        )
        .await
        .unwrap();
        all_routers.push(router);
        tables.push(Arc::new(table));
    }
    let engine = PhaseEngine::new(store.store.clone(), EngineSettings::default());
    World {
        _data: data,
        store,
        pool,
        m,
        tenants,
        routers: all_routers,
        tables,
        copier,
        engine,
    }
}

impl World {
    /// One guarded change, retried while the routers catch up or the buffer drains; waits
    /// until every live router has it.
    async fn change(&self, t: &TenantId, action: Action) -> Phase {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.engine.change(&self.m, t, action, &request()).await {
                Ok(moved) => {
                    for router in &self.routers {
                        router.nudge();
                    }
                    let ack = self
                        .engine
                        .wait_acknowledged(moved.change_version, Duration::from_secs(30))
                        .await
                        .unwrap();
                    assert!(ack.effective(), "{ack:?}");
                    return moved.to_phase;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "{action} {t}: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn copy(&self, t: &TenantId, direction: CopyDirection) {
        let outcome = self.copier.copy(t, direction, |_| {}).await.unwrap();
        if !matches!(outcome, Outcome::Complete { mismatches: 0, .. }) {
            let open = self.store.store.open_mismatches(&self.m, t).await.unwrap();
            let history = self.store.store.history(&self.m, t).await.unwrap();
            let phases: Vec<String> = history
                .iter()
                .map(|e| format!("{}->{}", e.from_phase, e.to_phase))
                .collect();
            let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
                "SELECT 'public', id::text, version, appends FROM public.items WHERE tenant_id = $1
                 UNION ALL SELECT 'moved', id::text, version, appends FROM moved.items WHERE tenant_id = $1
                 ORDER BY 2, 1",
            )
            .bind(t.as_str())
            .fetch_all(&self.pool)
            .await
            .unwrap();
            let buffered: Vec<(i64, String, String, String)> = self
                .store
                .store
                .open_updates(&self.m)
                .await
                .unwrap()
                .into_iter()
                .filter(|u| &u.tenant == t)
                .map(|u| (u.seq, u.key, u.operation, u.state))
                .collect();
            let keys: Vec<String> = open
                .iter()
                .map(|(_, k, _)| {
                    k.trim_matches(|c| c == '[' || c == ']' || c == '"')
                        .to_owned()
                })
                .collect();
            let rows: Vec<_> = rows.into_iter().filter(|r| keys.contains(&r.1)).collect();
            let verify = self.copier.verify(t, direction).await;
            let store_pool = sqlx::PgPool::connect(&self.store.url).await.unwrap();
            let all_buffered: Vec<(i64, String, String, String, String)> = sqlx::query_as(
                "SELECT seq, entity_key, operation, state, enqueued_at::text FROM ferry.ferry_update_buffer
                 WHERE tenant_id = $1 ORDER BY seq",
            )
            .bind(t.as_str())
            .fetch_all(&store_pool)
            .await
            .unwrap();
            eprintln!("ALL BUFFERED {all_buffered:?}");
            panic!(
                "{t} {direction:?}: {outcome:?}\nverify now {verify:?}\nmismatches {open:?}\nbuffered {buffered:?}\nphases {phases:?}\nrows {rows:?}"
            );
        }
    }

    /// One tenant's journey: forward to `target_only`, a step back with its reverse copy,
    /// back to `legacy` or on to `complete`, depending on `plan`.
    /// Returns whether the tenant is complete (and moves no more); only `may_complete`
    /// journeys go all the way, so tenants keep moving for the whole run.
    async fn journey(
        &self,
        t: &TenantId,
        plan: u64,
        may_complete: bool,
        changes: &AtomicU64,
    ) -> bool {
        let step = async |action| {
            let phase = self.change(t, action).await;
            changes.fetch_add(1, Ordering::Relaxed);
            phase
        };
        assert_eq!(step(Action::Advance).await, Phase::DualWrite);
        self.copy(t, CopyDirection::Forward).await;
        assert_eq!(step(Action::Advance).await, Phase::Shadow);
        if plan.is_multiple_of(3) {
            assert_eq!(step(Action::Rollback).await, Phase::Legacy);
            return false;
        }
        assert_eq!(step(Action::Advance).await, Phase::TargetPrimary);
        assert_eq!(step(Action::Advance).await, Phase::TargetOnly);
        if plan % 3 == 1 || !may_complete {
            assert_eq!(step(Action::Rollback).await, Phase::TargetPrimary);
            self.copy(t, CopyDirection::Reverse).await;
            assert_eq!(step(Action::Rollback).await, Phase::Shadow);
            assert_eq!(step(Action::Rollback).await, Phase::Legacy);
            false
        } else {
            assert_eq!(step(Action::Advance).await, Phase::Complete);
            true
        }
    }
}

async fn run_workload(w: Arc<World>, clients: u32, moving: usize) -> (Report, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut running = Vec::new();
    for c in 0..clients {
        let (w, stop) = (w.clone(), stop.clone());
        running.push(tokio::spawn(async move {
            let target = MovedTarget(w.tables[c as usize % w.tables.len()].clone());
            let settings = ClientSettings {
                client: c,
                tenants: w.tenants.clone(),
                keys_per_tenant: 3,
                seed: 0x5eed_0000 + u64::from(c),
            };
            run_client(&target, &settings, &stop).await
        }));
    }
    let changes = AtomicU64::new(0);
    let started = Instant::now();
    let mut round = 0u64;
    let mut complete = std::collections::HashSet::new();
    while started.elapsed() < run_for() && complete.len() < moving {
        for (i, t) in w.tenants.iter().take(moving).enumerate() {
            if complete.contains(t) {
                continue;
            }
            let late = started.elapsed() > run_for().mul_f64(0.8);
            if w.journey(t, round + i as u64, late, &changes).await {
                complete.insert(t.clone());
            }
            if started.elapsed() >= run_for() {
                break;
            }
        }
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut runs = Vec::new();
    for r in running {
        runs.push(r.await.unwrap());
    }
    let target = MovedTarget(w.tables[0].clone());
    (
        check(&target as &dyn Target, &runs).await,
        changes.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_fifty_tenants_phase_changes_and_rollbacks_zero_anomalies() {
    if let Ok(filter) = std::env::var("FERRY_CHECK_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let w = Arc::new(world(50, 2).await);
    let (report, changes) = run_workload(w.clone(), 8, 15).await;
    eprintln!("{report:#?}; {changes} phase changes");
    assert!(report.passed(), "{report:#?}");
    assert!(
        report.operations > 1000,
        "only {} operations",
        report.operations
    );
    assert!(changes >= 30, "only {changes} phase changes");
    // The tenants that never moved are on the source alone, exactly as written.
    let untouched: i64 =
        sqlx::query_scalar("SELECT count(*) FROM moved.items WHERE tenant_id >= 't15'")
            .fetch_one(&w.pool)
            .await
            .unwrap();
    assert_eq!(
        untouched, 0,
        "tenants never moved have nothing in the target"
    );
    let _ = &w.store;
}
