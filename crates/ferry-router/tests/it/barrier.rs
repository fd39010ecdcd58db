//! Race 3 of ARCHITECTURE.md, "stale router vs phase change": writers on several routers keep
//! writing while an operator walks tenants through every phase (with a rollback). After each
//! change becomes effective, every write acknowledged so far must be readable where the new
//! phase reads. Without the acknowledgement barrier, a router still in `legacy` after the
//! backfill ran writes only to the source, and the `target_primary` check finds it missing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_domain::{Action, MigrationId, Phase, ReadPlan, Side, TenantId};
use ferry_engine::{EngineError, EngineSettings, PhaseEngine, Refusal};
use ferry_router::Router;
use ferry_store::{BackfillProgress, CopyDirection};
use ferry_testkit::{TestDb, TestStore, both_stores};
use sqlx::PgPool;

use crate::follow::{migration, req, settings};

both_stores!(
    writes_acknowledged_under_an_old_phase_stay_visible,
    without_the_barrier_a_stale_router_loses_a_write,
);

const TENANTS: [&str; 4] = ["t0", "t1", "t2", "t3"];

fn table(side: Side) -> &'static str {
    match side {
        Side::Source => "source_rows",
        Side::Target => "target_rows",
    }
}

async fn write(pool: &PgPool, side: Side, tenant: &str, key: i64) {
    let sql = match side {
        Side::Source => {
            "INSERT INTO source_rows (tenant, k) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        }
        Side::Target => {
            "INSERT INTO target_rows (tenant, k) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        }
    };
    sqlx::query(sql)
        .bind(tenant)
        .bind(key)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("write {tenant}/{key} to {side}: {e}"));
}

/// A database holding both sides' tables (kept alive by the returned `TestDb`).
async fn both_sides() -> (TestDb, PgPool) {
    let data = TestDb::new().await;
    let pool = PgPool::connect(data.url()).await.unwrap();
    for side in [Side::Source, Side::Target] {
        let ddl = format!(
            "CREATE TABLE {} (tenant text NOT NULL, k bigint NOT NULL, PRIMARY KEY (tenant, k))",
            table(side)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
            .execute(&pool)
            .await
            .unwrap();
    }
    (data, pool)
}

/// Keys present on `side` for `tenant`.
async fn keys(pool: &PgPool, side: Side, tenant: &str) -> HashSet<i64> {
    let sql = match side {
        Side::Source => "SELECT k FROM source_rows WHERE tenant = $1",
        Side::Target => "SELECT k FROM target_rows WHERE tenant = $1",
    };
    sqlx::query_scalar(sql)
        .bind(tenant)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Acknowledged writes: (tenant, key, phase the writer routed by).
type Acked = Arc<Mutex<Vec<(String, i64, Phase)>>>;

async fn writer(
    router: Arc<Router>,
    pool: PgPool,
    migration: String,
    acked: Acked,
    next_key: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
) {
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let tenant = TENANTS[i % TENANTS.len()];
        i += 1;
        let key = next_key.fetch_add(1, Ordering::Relaxed);
        // The snapshot is held across both writes: the router will not acknowledge a newer
        // phase until this write is done.
        let snapshot = router.snapshot().expect("router is connected");
        let phase = snapshot.phase(&migration, tenant).phase;
        let plan = snapshot.write_plan(&migration, tenant);
        write(&pool, plan.first, tenant, key).await;
        if let Some(then) = plan.then {
            write(&pool, then, tenant, key).await;
        }
        drop(snapshot);
        acked.lock().unwrap().push((tenant.to_owned(), key, phase));
        tokio::task::yield_now().await;
    }
}

/// Retries a change refused only because routers have not caught up yet, then waits for
/// it to become effective. Any other refusal fails the test.
async fn change_effective(
    engine: &PhaseEngine,
    m: &MigrationId,
    tenant: &TenantId,
    action: Action,
) -> Phase {
    for _ in 0..1000 {
        match engine.change(m, tenant, action, &req()).await {
            Ok(moved) => {
                let ack = engine
                    .wait_acknowledged(moved.change_version, Duration::from_secs(20))
                    .await
                    .unwrap();
                assert!(ack.effective(), "routers never acknowledged: {ack:?}");
                return moved.to_phase;
            }
            Err(EngineError::Refused {
                reason: Refusal::Transition(ferry_domain::TransitionError::GuardsFailed(f)),
                ..
            }) if f
                .iter()
                .all(|g| g.guard() == ferry_domain::Guard::RoutersAcknowledged) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{action} {tenant}: {e}"),
        }
    }
    panic!("{action} {tenant}: routers never caught up");
}

/// The acknowledged writes of `tenant` that `phase`'s read side does not hold, and how many
/// were acknowledged.
async fn invisible(pool: &PgPool, acked: &Acked, tenant: &str, phase: Phase) -> (Vec<i64>, usize) {
    let expected: Vec<i64> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _, _)| t == tenant)
        .map(|(_, k, _)| *k)
        .collect();
    let side = ReadPlan::for_phase(phase).serve;
    let present = keys(pool, side, tenant).await;
    let missing = expected
        .iter()
        .copied()
        .filter(|k| !present.contains(k))
        .collect();
    (missing, expected.len())
}

async fn check_visible(pool: &PgPool, acked: &Acked, tenant: &str, phase: Phase) -> usize {
    let (missing, expected) = invisible(pool, acked, tenant, phase).await;
    let side = ReadPlan::for_phase(phase).serve;
    assert!(
        missing.is_empty(),
        "{tenant} in {phase}: {} acknowledged write(s) invisible on the {side}: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    expected
}

async fn backfill(pool: &PgPool, s: &TestStore, m: &MigrationId, tenant: &TenantId) {
    let copied = sqlx::query(
        "INSERT INTO target_rows (tenant, k) SELECT tenant, k FROM source_rows WHERE tenant = $1
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant.as_str())
    .execute(pool)
    .await
    .unwrap()
    .rows_affected();
    let epoch = s.store.tenant(m, tenant).await.unwrap().copy_epoch;
    s.store
        .record_backfill(&BackfillProgress {
            migration: m.clone(),
            tenant: tenant.clone(),
            direction: CopyDirection::Forward,
            rows_done: copied,
            rows_total: copied,
            complete: true,
            last_key: None,
            batch_size: 0,
            rows_per_s: 0.0,
            throttled: None,
            updated_at: None,
            epoch,
        })
        .await
        .unwrap();
}

async fn writes_acknowledged_under_an_old_phase_stay_visible(s: &TestStore) {
    let (_data, pool) = both_sides().await;
    let m = migration(&s.store, &TENANTS).await;
    let engine = PhaseEngine::new(
        s.store.clone(),
        EngineSettings {
            router_lease: Duration::from_secs(5),
            ..EngineSettings::default()
        },
    );

    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let next_key = Arc::new(AtomicI64::new(0));
    let mut routers = Vec::new();
    let mut writers = Vec::new();
    for i in 0..3 {
        let router = Arc::new(
            Router::start(s.reopen().await, settings(&format!("app-{i}")))
                .await
                .unwrap(),
        );
        routers.push(router.clone());
        writers.push(tokio::spawn(writer(
            router,
            pool.clone(),
            m.to_string(),
            acked.clone(),
            next_key.clone(),
            stop.clone(),
        )));
    }

    // t1 is rolled back from target_primary (to shadow, then legacy) and then moved all the
    // way again; the others go straight through.
    let mut checks = 0;
    for (n, name) in TENANTS.iter().enumerate() {
        let tenant = TenantId::new(*name).unwrap();
        let mut actions = vec![Action::Advance; 5];
        if n == 1 {
            let detour = [
                Action::Rollback,
                Action::Rollback,
                Action::Advance,
                Action::Advance,
                Action::Advance,
            ];
            actions.splice(3..3, detour);
        }
        let mut phase = Phase::Legacy;
        for action in actions {
            if phase == Phase::DualWrite && action == Action::Advance {
                backfill(&pool, s, &m, &tenant).await;
            }
            phase = change_effective(&engine, &m, &tenant, action).await;
            // Let writers run under the new phase: a few more acknowledged writes.
            let before = acked.lock().unwrap().len();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while acked.lock().unwrap().len() < before + 10 {
                assert!(std::time::Instant::now() < deadline, "the writers stalled");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            check_visible(&pool, &acked, name, phase).await;
            checks += 1;
        }
        assert_eq!(phase, Phase::Complete);
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    for name in TENANTS {
        check_visible(&pool, &acked, name, Phase::Complete).await;
    }
    let phases_written: HashSet<Phase> = acked.lock().unwrap().iter().map(|(_, _, p)| *p).collect();
    assert_eq!(
        phases_written.len(),
        6,
        "writes raced every phase: {phases_written:?}"
    );
    assert_eq!(checks, 4 * 5 + 5, "{checks} checks");
    let total = acked.lock().unwrap().len();
    assert!(total > 100, "only {total} writes raced the changes");
    for router in routers {
        Arc::into_inner(router).unwrap().shutdown().await.unwrap();
    }
}

/// The control run of the test above: it shows the check catches a stale router. A router
/// holds a snapshot taken in `legacy` (a request in flight). With the barrier, the tenant
/// cannot go past `dual_write` until that router acknowledges, which it cannot while the
/// request runs. Forced past the barrier to `target_primary`, the request then writes the
/// source only, and the check finds that acknowledged write missing where the phase reads.
async fn without_the_barrier_a_stale_router_loses_a_write(s: &TestStore) {
    let (_data, pool) = both_sides().await;
    let m = migration(&s.store, &TENANTS).await;
    let t0 = TenantId::new("t0").unwrap();
    let engine = PhaseEngine::new(s.store.clone(), EngineSettings::default());
    let router = Router::start(s.reopen().await, settings("app-stale"))
        .await
        .unwrap();
    let stale = router.snapshot().expect("router is connected");
    assert_eq!(stale.phase(m.as_str(), "t0").phase, Phase::Legacy);

    // With the barrier: dual_write is entered, but not left while the router lags.
    let moved = engine
        .change(&m, &t0, Action::Advance, &req())
        .await
        .unwrap();
    assert_eq!(moved.to_phase, Phase::DualWrite);
    backfill(&pool, s, &m, &t0).await;
    match engine.change(&m, &t0, Action::Advance, &req()).await {
        Err(EngineError::Refused {
            reason: Refusal::Transition(ferry_domain::TransitionError::GuardsFailed(f)),
            ..
        }) => assert!(
            f.iter()
                .any(|g| g.guard() == ferry_domain::Guard::RoutersAcknowledged),
            "{f:?}"
        ),
        other => panic!("the barrier let the tenant past dual_write: {other:?}"),
    }

    // Without it (forced): the tenant reaches target_primary under the stale request.
    let forced = ferry_engine::Request {
        force: true,
        ..req()
    };
    for want in [Phase::Shadow, Phase::TargetPrimary] {
        let moved = engine
            .change(&m, &t0, Action::Advance, &forced)
            .await
            .unwrap();
        assert_eq!(moved.to_phase, want);
    }
    let acked: Acked = Arc::default();
    let plan = stale.write_plan(m.as_str(), "t0");
    write(&pool, plan.first, "t0", 1).await;
    if let Some(then) = plan.then {
        write(&pool, then, "t0", 1).await;
    }
    drop(stale);
    acked.lock().unwrap().push(("t0".into(), 1, Phase::Legacy));
    let (missing, expected) = invisible(&pool, &acked, "t0", Phase::TargetPrimary).await;
    assert_eq!(
        (missing, expected),
        (vec![1], 1),
        "the check must see the lost write"
    );
    router.shutdown().await.unwrap();
}
