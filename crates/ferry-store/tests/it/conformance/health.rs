//! A migration's health (`areas/health.rs`): the buffer and mismatches, summed.

use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

use super::{migration_with_tenants, tenant};

both_stores!(health_sums_the_buffer_and_mismatches);

async fn health_sums_the_buffer_and_mismatches(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1)]).await;
    let other = migration_with_tenants(s, "other", &[("a", 1)]).await;
    assert_eq!(
        s.store.migration_health(&m).await.unwrap(),
        MigrationHealth::default()
    );
    let mut seqs = vec![];
    for (t, key) in [("a", "k1"), ("a", "k2"), ("b", "k1")] {
        seqs.push(
            s.store
                .enqueue_update(&m, &tenant(t), key, "update", &serde_json::json!({}))
                .await
                .unwrap(),
        );
    }
    s.store
        .enqueue_update(&other, &tenant("a"), "k", "update", &serde_json::json!({}))
        .await
        .unwrap();
    s.store
        .record_update_failure(&[seqs[0]], "down", 2)
        .await
        .unwrap();
    s.store
        .record_update_failure(&[seqs[0], seqs[1]], "down", 2)
        .await
        .unwrap();
    s.store.mark_update_applied(seqs[2]).await.unwrap();
    let id = s
        .store
        .record_mismatch(&m, &tenant("a"), "k1", "differs")
        .await
        .unwrap();
    s.store
        .record_mismatch(&m, &tenant("b"), "k9", "missing")
        .await
        .unwrap();
    s.store.resolve_mismatch(id).await.unwrap();
    let h = s.store.migration_health(&m).await.unwrap();
    assert_eq!(
        (
            h.buffer_pending,
            h.buffer_dead,
            h.buffer_retrying,
            h.buffer_attempts
        ),
        (1, 1, 1, 3),
        "{h:?}"
    );
    assert!(h.buffer_oldest_pending_at.is_some());
    assert_eq!((h.mismatches_open, h.mismatches_total), (1, 2));
}
