//! Holes a review found in tiering's data paths, each reproduced against a real PostgreSQL,
//! then closed. Every test is named after the hole it closes.

use std::time::{Duration, Instant};

use ferry_domain::{Action, Phase};
use ferry_testkit::{TestStore, both_stores};

use crate::fixture::{Fixture, cutoff_day, tenant};

both_stores!(hot_copy_deletion_stops_when_the_tenant_leaves_target_only,);

/// Waits until some backend waits for an advisory lock in the hot database.
async fn until_a_lock_is_awaited(pool: &sqlx::PgPool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT exists (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing ever waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Item 5 of the review, tiering's half: `ferry tier run` read the phase once per pass, so a
/// pass deleting hot copies in `target_only` went on deleting after the tenant stepped back
/// to `target_primary`, whose reads fall back to those copies. A deletion batch now runs only
/// while the tenant is still in the `target_only` epoch the pass started in.
async fn hot_copy_deletion_stops_when_the_tenant_leaves_target_only(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    let t = tenant("acme");
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert!(f.tiering.archive(&t, &cutoff_day(200)).await.unwrap().rows >= 190);
    for phase in [Phase::Shadow, Phase::TargetPrimary, Phase::TargetOnly] {
        assert_eq!(f.change("acme", Action::Advance).await, phase);
    }
    let hot_before = f.hot_rows("acme").await;
    // The deletion's first batch waits for the tenant lock a writer holds…
    let writer = f.tiering.lock_tenant(&t, false).await.unwrap();
    let deleting = {
        let (tiering, t) = (f.tiering.clone(), t.clone());
        tokio::spawn(async move { tiering.delete_hot_copies(&t, 20).await })
    };
    until_a_lock_is_awaited(&f.pool).await;
    // …while the tenant steps back to target_primary.
    assert_eq!(
        f.change("acme", Action::Rollback).await,
        Phase::TargetPrimary
    );
    writer.commit().await.unwrap();
    let deleted = deleting.await.unwrap().unwrap();
    assert_eq!(deleted, 0, "no hot copy deleted after the step back");
    assert_eq!(f.hot_rows("acme").await, hot_before);
}
