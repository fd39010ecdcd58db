//! The transition guards' facts (`areas/guards.rs`), gathered from progress, mismatches, the buffer
//! and routers.

use std::time::Duration;

use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

use super::{advance, meta, migration_with_tenants, router, tenant};

both_stores!(guard_facts_come_from_progress_mismatches_buffer_and_routers);

async fn guard_facts_come_from_progress_mismatches_buffer_and_routers(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 100), ("b", 100)]).await;
    // Move a first (the copier reports progress only in dual_write and shadow), so that its
    // changed_at_version (1) is ahead of app-1's acknowledgement (0).
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    s.store
        .apply_changes(&m, &[advance(&a)], &meta())
        .await
        .unwrap();
    s.store
        .record_backfill(&BackfillProgress {
            migration: m.clone(),
            tenant: tenant("a"),
            direction: CopyDirection::Forward,
            rows_done: 40,
            rows_total: 100,
            complete: false,
            last_key: None,
            batch_size: 0,
            rows_per_s: 0.0,
            throttled: None,
            updated_at: None,
            epoch: 0,
        })
        .await
        .unwrap();
    let mismatch = s
        .store
        .record_mismatch(&m, &tenant("a"), "order:17", "amount differs")
        .await
        .unwrap();
    let seq = s
        .store
        .enqueue_update(
            &m,
            &tenant("a"),
            "order:17",
            "update",
            &serde_json::json!({"amount": 5}),
        )
        .await
        .unwrap();
    s.store
        .heartbeat(&router("app-1"), "test", 0)
        .await
        .unwrap();

    let records = vec![
        s.store.tenant(&m, &tenant("a")).await.unwrap(),
        s.store.tenant(&m, &tenant("b")).await.unwrap(),
    ];
    let lease = Duration::from_secs(30);
    let facts = s.store.guard_facts(&m, &records, lease).await.unwrap();
    assert_eq!(facts.len(), 2);
    let a = &facts[0];
    assert!(!a.backfill_complete);
    assert_eq!((a.backfill_rows_done, a.backfill_rows_total), (40, 100));
    assert_eq!(a.unresolved_mismatches, 1);
    assert_eq!(a.buffer_depth, 1);
    assert_eq!(a.lagging_routers, ["app-1"]);
    let b = &facts[1];
    assert_eq!(b.unresolved_mismatches, 0);
    assert_eq!(b.buffer_depth, 0);
    assert!(
        b.lagging_routers.is_empty(),
        "b never changed: nothing to acknowledge"
    );

    s.store.resolve_mismatch(mismatch).await.unwrap();
    s.store.mark_update_applied(seq).await.unwrap();
    s.store
        .heartbeat(&router("app-1"), "test", 1)
        .await
        .unwrap();
    s.store
        .record_backfill(&BackfillProgress {
            migration: m.clone(),
            tenant: tenant("a"),
            direction: CopyDirection::Forward,
            rows_done: 100,
            rows_total: 100,
            complete: true,
            last_key: None,
            batch_size: 0,
            rows_per_s: 0.0,
            throttled: None,
            updated_at: None,
            epoch: 0,
        })
        .await
        .unwrap();
    let facts = s.store.guard_facts(&m, &records[..1], lease).await.unwrap();
    let a = &facts[0];
    assert!(a.backfill_complete);
    assert_eq!((a.unresolved_mismatches, a.buffer_depth), (0, 0));
    assert!(a.lagging_routers.is_empty());
    assert!(
        a.source_current,
        "never in target_only: the source is current"
    );
}
