use std::sync::Arc;
use std::time::Duration;

use ferry_domain::{Action, MigrationId, Phase, RouterId, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_router::{Router, RouterError, RouterSettings};
use ferry_store::{ControlStore, MigrationKind, NewMigration, TenantSize};
use ferry_testkit::{TestDb, TestStore, both_stores};

pub fn settings(id: &str) -> RouterSettings {
    RouterSettings {
        heartbeat: Duration::from_millis(50),
        serve_window: Duration::from_secs(2),
        ..RouterSettings::new(RouterId::new(id).unwrap(), "test")
    }
}

pub fn req() -> Request {
    Request {
        actor: "test".into(),
        reason: "test".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    }
}

pub async fn migration(store: &Arc<dyn ControlStore>, tenants: &[&str]) -> MigrationId {
    let m = MigrationId::new("m").unwrap();
    store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::TenantMove,
            description: String::new(),
            config: serde_json::json!({}),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let sizes: Vec<TenantSize> = tenants
        .iter()
        .map(|t| TenantSize {
            tenant: TenantId::new(*t).unwrap(),
            rows: 1,
        })
        .collect();
    store.register_tenants(&m, &sizes).await.unwrap();
    m
}

both_stores!(
    routers_load_follow_and_acknowledge,
    an_operation_in_flight_holds_the_acknowledgement,
    shutdown_leaves_the_barrier,
);

async fn routers_load_follow_and_acknowledge(s: &TestStore) {
    let m = migration(&s.store, &["a", "b"]).await;
    let engine = PhaseEngine::new(s.store.clone(), EngineSettings::default());
    let a = TenantId::new("a").unwrap();
    engine
        .change(&m, &a, Action::Advance, &req())
        .await
        .unwrap();

    // A router started after the change sees it at once.
    let router = Router::start(s.reopen().await, settings("app-1"))
        .await
        .unwrap();
    assert_eq!(router.phase("m", "a").unwrap().phase, Phase::DualWrite);
    assert_eq!(router.phase("m", "b").unwrap().phase, Phase::Legacy);
    assert_eq!(router.phase("other", "a").unwrap().phase, Phase::Legacy);

    // A change made now reaches it and becomes effective through its acknowledgement.
    let moved = engine.change(&m, &a, Action::Pause, &req()).await.unwrap();
    let ack = engine
        .wait_acknowledged(moved.change_version, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(ack.effective(), "{ack:?}");
    let state = router.phase("m", "a").unwrap();
    assert_eq!((state.phase, state.paused), (Phase::DualWrite, true));
    assert!(router.snapshot().unwrap().version() >= moved.change_version);
    router.shutdown().await.unwrap();
}

async fn an_operation_in_flight_holds_the_acknowledgement(s: &TestStore) {
    let m = migration(&s.store, &["a"]).await;
    // A short lease: the operation below outlasts it, and the router must stay live anyway.
    let lease = Duration::from_millis(400);
    let engine = PhaseEngine::new(
        s.store.clone(),
        EngineSettings {
            router_lease: lease,
            ..EngineSettings::default()
        },
    );
    let router = Router::start(s.reopen().await, settings("app-1"))
        .await
        .unwrap();
    let a = TenantId::new("a").unwrap();

    // An operation starts under legacy and is still running when the phase changes.
    let in_flight = router.snapshot().unwrap();
    assert_eq!(in_flight.phase("m", "a").phase, Phase::Legacy);
    let moved = engine
        .change(&m, &a, Action::Advance, &req())
        .await
        .unwrap();
    router.nudge();
    let ack = engine
        .wait_acknowledged(moved.change_version, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(
        ack.lagging,
        ["app-1"],
        "not acknowledged while the old snapshot is in use"
    );
    // New operations already route by the new phase.
    assert_eq!(router.phase("m", "a").unwrap().phase, Phase::DualWrite);
    drop(in_flight);
    let ack = engine
        .wait_acknowledged(moved.change_version, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(ack.effective());
    router.shutdown().await.unwrap();
}

async fn shutdown_leaves_the_barrier(s: &TestStore) {
    let m = migration(&s.store, &["a"]).await;
    let router = Router::start(s.reopen().await, settings("app-1"))
        .await
        .unwrap();
    assert_eq!(
        s.store
            .routers(Duration::from_secs(30))
            .await
            .unwrap()
            .len(),
        1
    );
    router.shutdown().await.unwrap();
    assert!(
        s.store
            .routers(Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    let engine = PhaseEngine::new(s.store.clone(), EngineSettings::default());
    let moved = engine
        .change(&m, &TenantId::new("a").unwrap(), Action::Advance, &req())
        .await
        .unwrap();
    assert!(
        engine
            .acknowledgement(moved.change_version)
            .await
            .unwrap()
            .effective()
    );
}

/// A router cut off from its store stops routing before the engine would presume it dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_cut_off_from_the_store_refuses_to_route() {
    let db = TestDb::new().await;
    let store = ferry_store::open(db.url(), &ferry_store::StoreOptions::default())
        .await
        .unwrap();
    migration(&store, &["a"]).await;
    let mut cfg = settings("app-1");
    cfg.serve_window = Duration::from_millis(600);
    let router = Router::start(store, cfg).await.unwrap();
    assert!(router.snapshot().is_ok());
    // Take the store away: every connection is terminated and the database dropped.
    let name = db.name().to_owned();
    drop(db);
    let admin = sqlx::PgPool::connect(&ferry_testkit::server_url())
        .await
        .unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT exists (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(!exists);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while router.snapshot().is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "a router that cannot heartbeat kept routing"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match router.snapshot() {
        Err(RouterError::Stale { silent, limit, .. }) => assert!(silent > limit),
        Err(e) => panic!("expected a staleness error, got {e}"),
        Ok(_) => panic!("a router that cannot heartbeat kept routing"),
    }
}
