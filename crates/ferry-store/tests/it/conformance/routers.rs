//! Routers (`areas/routers.rs`): heartbeats, the change feed, route counts.

use std::time::Duration;

use ferry_domain::{Action, Phase};
use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

use super::{advance, meta, migration_with_tenants, router, tenant};

both_stores!(
    routers_heartbeat_and_follow_changes,
    route_counts_are_replaced_per_router,
);

async fn routers_heartbeat_and_follow_changes(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1)]).await;
    s.store
        .heartbeat(&router("app-1"), "pid 1", 0)
        .await
        .unwrap();
    s.store
        .heartbeat(&router("app-2"), "pid 2", 0)
        .await
        .unwrap();
    // A late heartbeat never moves an acknowledgement back.
    s.store
        .heartbeat(&router("app-2"), "pid 2", 5)
        .await
        .unwrap();
    s.store
        .heartbeat(&router("app-2"), "pid 2", 3)
        .await
        .unwrap();
    let routers = s.store.routers(Duration::from_secs(30)).await.unwrap();
    let seen: Vec<_> = routers
        .iter()
        .map(|r| (r.id.to_string(), r.seen_version, r.live))
        .collect();
    assert_eq!(
        seen,
        [("app-1".to_owned(), 0, true), ("app-2".to_owned(), 5, true)]
    );
    // Past a 1 ms lease every router is dead, as soon as the clock has moved on.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s
        .store
        .routers(Duration::from_millis(1))
        .await
        .unwrap()
        .iter()
        .any(|r| r.live)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "past the lease a router is dead"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.store.deregister_router(&router("app-1")).await.unwrap();
    assert_eq!(
        s.store
            .routers(Duration::from_secs(30))
            .await
            .unwrap()
            .len(),
        1
    );

    // A fresh router loads only non-default tenants; then follows increments.
    assert!(s.store.changes_since(0).await.unwrap().is_empty());
    let mut feed = s.store.change_feed();
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let applied = s
        .store
        .apply_changes(&m, &[advance(&a)], &meta())
        .await
        .unwrap();
    let observed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match feed.changed().await {
                Some(v) if v >= applied.change_version => return v,
                Some(_) => continue,
                None => panic!("feed ended"),
            }
        }
    })
    .await
    .expect("the feed reports a committed change within 10 s");
    assert_eq!(observed, applied.change_version);
    let changed = s.store.changes_since(0).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].state.phase, Phase::DualWrite);
    assert!(
        s.store
            .changes_since(applied.change_version)
            .await
            .unwrap()
            .is_empty()
    );
    // Rolled back to legacy: an incremental reader must still learn of it.
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let back = PhaseChange {
        tenant: a.tenant.clone(),
        action: Action::Rollback,
        expected_version: a.state.version,
        from: a.state,
        to_phase: Phase::Legacy,
        to_paused: false,
        forced_guards: vec![],
        recheck_buffer: false,
        recheck_mismatches: false,
    };
    s.store.apply_changes(&m, &[back], &meta()).await.unwrap();
    let changed = s.store.changes_since(applied.change_version).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].state.phase, Phase::Legacy);
}

async fn route_counts_are_replaced_per_router(s: &TestStore) {
    let count = |path: &str, n| RouteCount {
        migration: "m".into(),
        operation: "read".into(),
        phase: "shadow".into(),
        path: path.into(),
        reason: "phase".into(),
        count: n,
    };
    let (r1, r2) = (router("app-1"), router("app-2"));
    s.store.heartbeat(&r1, "app", 0).await.unwrap();
    s.store.heartbeat(&r2, "app", 0).await.unwrap();
    s.store
        .record_route_counts(&r1, &[count("source", 3)])
        .await
        .unwrap();
    s.store
        .record_route_counts(&r1, &[count("source", 5), count("target", 1)])
        .await
        .unwrap();
    s.store
        .record_route_counts(&r2, &[count("source", 7)])
        .await
        .unwrap();
    let all = s.store.route_counts().await.unwrap();
    let flat: Vec<(&str, &str, u64)> = all
        .iter()
        .map(|(r, c)| (r.as_str(), c.path.as_str(), c.count))
        .collect();
    assert_eq!(
        flat,
        [
            ("app-1", "source", 5),
            ("app-1", "target", 1),
            ("app-2", "source", 7)
        ]
    );
    s.store.deregister_router(&r1).await.unwrap();
    let all = s.store.route_counts().await.unwrap();
    assert_eq!(all.len(), 1, "a router's counts leave with it");
}
