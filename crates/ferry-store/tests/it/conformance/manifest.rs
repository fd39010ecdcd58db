//! The cold tier's manifest (`areas/manifest.rs`): atomic, exclusive segment commits.

use std::time::Duration;

use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

use super::{migration_with_tenants, tenant};

both_stores!(segment_commits_are_atomic_and_exclusive);

fn new_segment(id: i64, min: i64, max: i64) -> NewSegment {
    NewSegment {
        id,
        path: format!("m/a/{id}.parquet"),
        rows: (max - min + 1) as u64,
        min_key: format!("[{min}]"),
        max_key: format!("[{max}]"),
        checksum: "c".repeat(64),
    }
}

async fn segment_commits_are_atomic_and_exclusive(s: &TestStore) {
    let m = migration_with_tenants(s, "tier", &[("a", 1), ("b", 1)]).await;
    let (a, b) = (tenant("a"), tenant("b"));
    let first = s.store.reserve_segment(&m, &a).await.unwrap();
    let seq = s
        .store
        .enqueue_update(&m, &a, "[5]", "update", &serde_json::json!({"id": 5}))
        .await
        .unwrap();
    s.store
        .commit_segments(
            &m,
            &a,
            &SegmentCommit {
                add: vec![new_segment(first, 1, 100)],
                archived_through: Some("2026-01-01T00:00:00Z".into()),
                ..SegmentCommit::default()
            },
        )
        .await
        .unwrap();
    let live = s.store.segments(&m, &a).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].id, live[0].rows, live[0].min_key.as_str()),
        (first, 100, "[1]")
    );
    assert!(
        s.store.segments(&m, &b).await.unwrap().is_empty(),
        "per tenant"
    );
    assert_eq!(
        s.store.archived_through(&m, &a).await.unwrap().as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    assert_eq!(s.store.archived_through(&m, &b).await.unwrap(), None);

    // Two workers rewrite the same segment: one swap wins, the other changes nothing.
    let (x, y) = (
        s.store.reserve_segment(&m, &a).await.unwrap(),
        s.store.reserve_segment(&m, &a).await.unwrap(),
    );
    let swap = |id: i64| SegmentCommit {
        add: vec![new_segment(id, 1, 100)],
        retire: vec![first],
        applied: vec![seq],
        archived_through: None,
        requeue: vec![Requeue {
            key: format!("[{id}]"),
            operation: "delete".into(),
            payload: serde_json::Value::Null,
        }],
    };
    s.store.commit_segments(&m, &a, &swap(x)).await.unwrap();
    let lost = s.store.commit_segments(&m, &a, &swap(y)).await.unwrap_err();
    assert!(matches!(lost, StoreError::Conflict { .. }), "{lost}");
    let live = s.store.segments(&m, &a).await.unwrap();
    assert_eq!(live.iter().map(|s| s.id).collect::<Vec<_>>(), [x]);
    // The changes a commit buffers are buffered with it, or not at all.
    let pending = s.store.pending_updates(&m, &a).await.unwrap();
    assert_eq!(
        pending.iter().map(|u| u.key.clone()).collect::<Vec<_>>(),
        [format!("[{x}]")]
    );
    // The retired segment is garbage now; the losing reservation once it is stale.
    let garbage: Vec<i64> = s
        .store
        .garbage_segments(&m, Duration::from_secs(3600))
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(garbage, [first]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let garbage: Vec<i64> = s
        .store
        .garbage_segments(&m, Duration::from_millis(1))
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(garbage, [first, y]);
    assert!(s.store.forget_segment(first).await.unwrap());
    assert!(
        !s.store.forget_segment(x).await.unwrap(),
        "live: not forgotten"
    );
    assert_eq!(s.store.segments(&m, &a).await.unwrap().len(), 1);
    // A segment must have been reserved for this tenant.
    let other = s.store.reserve_segment(&m, &b).await.unwrap();
    let wrong = SegmentCommit {
        add: vec![new_segment(other, 1, 2)],
        ..SegmentCommit::default()
    };
    assert!(s.store.commit_segments(&m, &a, &wrong).await.is_err());
    assert!(s.store.segments(&m, &b).await.unwrap().is_empty());
}
