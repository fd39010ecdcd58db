//! The update buffer's rows (`areas/buffer.rs`): retries, dead changes, operator retry and drop.

use ferry_testkit::{TestStore, both_stores};

use super::{migration_with_tenants, tenant};

both_stores!(the_update_buffer_retries_then_parks_changes);

async fn the_update_buffer_retries_then_parks_changes(s: &TestStore) {
    let m = migration_with_tenants(s, "buf", &[("a", 1), ("b", 1)]).await;
    let (a, b) = (tenant("a"), tenant("b"));
    let mut seqs = Vec::new();
    for (t, k) in [(&a, "[1]"), (&b, "[1]"), (&a, "[2]"), (&a, "[1]")] {
        seqs.push(
            s.store
                .enqueue_update(&m, t, k, "update", &serde_json::json!({"k": k}))
                .await
                .unwrap(),
        );
    }
    let pending = s.store.pending_updates(&m, &a).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|u| (u.seq, u.key.as_str()))
            .collect::<Vec<_>>(),
        [(seqs[0], "[1]"), (seqs[2], "[2]"), (seqs[3], "[1]")],
        "per tenant, in sequence order"
    );
    assert_eq!(pending[0].payload, serde_json::json!({"k": "[1]"}));
    for _ in 0..2 {
        s.store
            .record_update_failure(&[seqs[0], seqs[2]], "object store down", 3)
            .await
            .unwrap();
    }
    assert_eq!(
        s.store.pending_updates(&m, &a).await.unwrap()[0].attempts,
        2
    );
    s.store
        .record_update_failure(&[seqs[0]], "object store down", 3)
        .await
        .unwrap();
    let open = s.store.open_updates(&m).await.unwrap();
    let dead: Vec<i64> = open
        .iter()
        .filter(|u| u.state == "dead")
        .map(|u| u.seq)
        .collect();
    assert_eq!(dead, [seqs[0]]);
    assert_eq!(open.len(), 4);
    assert_eq!(open[0].last_error.as_deref(), Some("object store down"));
    assert!(s.store.retry_update(seqs[0]).await.unwrap());
    assert!(
        !s.store.retry_update(seqs[0]).await.unwrap(),
        "no longer dead"
    );
    let again = s.store.pending_updates(&m, &a).await.unwrap();
    assert_eq!((again[0].seq, again[0].attempts), (seqs[0], 0));
    // An operator gives up on one: it leaves the buffer, the note stays on it.
    assert!(
        s.store
            .drop_update(seqs[2], "dropped by alice: bad row")
            .await
            .unwrap()
    );
    assert!(!s.store.drop_update(seqs[2], "again").await.unwrap());
    let open = s.store.open_updates(&m).await.unwrap();
    assert!(open.iter().all(|u| u.seq != seqs[2]));
}
