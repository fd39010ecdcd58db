//! A router that loses its lease must not come back serving phases it never re-read.
//!
//! The router's control store is reached as a role of the test's own, so the test can take
//! away exactly what it wants: everything (the router is cut off), then only the phases (it
//! can heartbeat but not refresh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_domain::{Action, Phase, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine};
use ferry_router::{Router, RouterError};
use ferry_store::{ControlStore, StoreOptions};
use ferry_testkit::{TestDb, TestRole};

use crate::follow::{migration, req, settings};

async fn exec(db: &TestDb, sql: String) {
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

/// Polls `done` every 20 ms until it holds, failing the test after `limit`.
async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_stale(router: &Router) -> bool {
    matches!(router.snapshot(), Err(RouterError::Stale { .. }))
}

/// Item 6 of the review: the follow loop heartbeat even when its refresh failed, and a
/// heartbeat renewed the serve window, so a router presumed dead (the engine moved the tenant
/// on twice without it) served `legacy` again the moment it could heartbeat, though it had
/// not read a single phase since. It must refuse to route until a refresh succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_cannot_serve_a_snapshot_two_phases_old_after_losing_its_lease() {
    let db = TestDb::new().await;
    let admin = ferry_store::open(db.url(), &StoreOptions::default())
        .await
        .unwrap();
    let m = migration(&admin, &["a"]).await;
    let role = TestRole::new(&db, "router").await;
    let r = role.quoted();
    exec(
        &db,
        format!(
            "GRANT USAGE ON SCHEMA ferry TO {r};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ferry TO {r};
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA ferry TO {r};"
        ),
    )
    .await;
    let router_store: Arc<dyn ControlStore> =
        ferry_store::open(role.url(), &StoreOptions::default())
            .await
            .unwrap();
    let mut cfg = settings("app-1");
    cfg.serve_window = Duration::from_millis(600);
    let router = Router::start(router_store, cfg).await.unwrap();
    assert_eq!(router.phase("m", "a").unwrap().phase, Phase::Legacy);

    // Cut off: the router can neither read nor heartbeat, stops routing, and the engine
    // (lease 1 s) presumes it dead and moves the tenant on twice.
    exec(
        &db,
        format!("REVOKE ALL ON ALL TABLES IN SCHEMA ferry FROM {r}"),
    )
    .await;
    wait_until(
        "the cut-off router refuses to route",
        Duration::from_secs(10),
        || is_stale(&router),
    )
    .await;
    let engine = PhaseEngine::new(
        admin.clone(),
        EngineSettings {
            router_lease: Duration::from_secs(1),
            ..EngineSettings::default()
        },
    );
    let a = TenantId::new("a").unwrap();
    for step in 0..2 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The first step passes the barrier only once the router is presumed dead; the
            // second is forced past the backfill guard (nothing is copied here).
            let forced = ferry_engine::Request {
                force: step == 1,
                ..req()
            };
            match engine.change(&m, &a, Action::Advance, &forced).await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline && e.to_string().contains("acknowledged") => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("advance: {e}"),
            }
        }
    }
    assert_eq!(
        admin.tenant(&m, &a).await.unwrap().state.phase,
        Phase::Shadow
    );

    // Heartbeats work again, reading phases does not: the router must still refuse.
    exec(
        &db,
        format!(
            "GRANT SELECT, INSERT, UPDATE ON ferry.ferry_routers, ferry.ferry_route_counts TO {r}"
        ),
    )
    .await;
    // Three more refreshes fail, each a chance to heartbeat: a serve window renewed by a
    // heartbeat would show by now.
    let failed = router.health().refresh_failures;
    wait_until("three more refreshes fail", Duration::from_secs(10), || {
        router.health().refresh_failures >= failed + 3
    })
    .await;
    match router.snapshot() {
        Err(RouterError::Stale { .. }) => {}
        Err(e) => panic!("expected a staleness refusal, got {e}"),
        Ok(s) => panic!(
            "a router that has not read a phase since losing its lease routes tenant a by {} (the store says shadow)",
            s.phase("m", "a").phase
        ),
    }

    // Everything back: it refreshes and routes by the current phase.
    exec(
        &db,
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA ferry TO {r}"),
    )
    .await;
    wait_until("the router routes again", Duration::from_secs(10), || {
        router.snapshot().is_ok()
    })
    .await;
    assert_eq!(router.phase("m", "a").unwrap().phase, Phase::Shadow);
    router.shutdown().await.unwrap();
}
