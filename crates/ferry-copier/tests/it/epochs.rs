//! Item 5 of the review: copy progress belongs to the tenant's copy epoch. A copier that is
//! mid-copy when the tenant goes back to `legacy` and forward again must not carry on from
//! its old key: writes made during `legacy` below that key would never reach the target, and
//! the backfill would be marked complete over them.

use ferry_copier::Outcome;
use ferry_domain::Action;
use ferry_store::{CopyControl, CopyDirection};
use ferry_testkit::{TestStore, both_stores};

use crate::fixture::{Fixture, tenant};

both_stores!(a_copier_across_a_rollback_to_legacy_starts_over,);

async fn a_copier_across_a_rollback_to_legacy_starts_over(store: &TestStore) {
    let f = Fixture::new(
        store.reopen_as_test_store().await,
        &[("t1", 1000)],
        serde_json::json!({}),
    )
    .await;
    let t1 = tenant("t1");
    f.change("t1", Action::Advance).await;
    // Slow the copy down so it is surely mid-way when the test steps in.
    let slow = CopyControl {
        rate_limit: Some(40),
        ..CopyControl::default()
    };
    f.store()
        .set_control(&f.migration, Some(&t1), slow)
        .await
        .unwrap();
    let (batches, mut batch_seen) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let copier = f.copier().await;
    let copy = {
        let t1 = t1.clone();
        tokio::spawn(async move {
            let outcome = copier
                .copy(&t1, CopyDirection::Forward, |p| {
                    let _ = batches.send(p.rows_done);
                })
                .await;
            (copier, outcome)
        })
    };
    // After its first batch, hold the copier's next one with the tenant lock.
    batch_seen.recv().await.expect("a first batch");
    let mut held = f.pool.begin().await.unwrap();
    ferry_copier::tenant_lock::take(&mut held, &f.migration, &t1, false)
        .await
        .unwrap();
    let copied_so_far: i64 =
        sqlx::query_scalar("SELECT count(*) FROM moved.orders WHERE tenant_id = 't1'")
            .fetch_one(&f.pool)
            .await
            .unwrap();
    assert!(
        (1..1000).contains(&copied_so_far),
        "mid-copy: {copied_so_far}"
    );
    // Back to legacy, where writes reach the source only: rows below the copier's key
    // change and go. Then forward again.
    assert_eq!(
        f.change("t1", Action::Rollback).await,
        ferry_domain::Phase::Legacy
    );
    sqlx::raw_sql(
        "UPDATE public.orders SET note = 'written in legacy', version = version + 1000
             WHERE tenant_id = 't1' AND id = 1;
         DELETE FROM public.orders WHERE tenant_id = 't1' AND id = 2;",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    f.change("t1", Action::Advance).await;
    f.store()
        .set_control(&f.migration, Some(&t1), CopyControl::default())
        .await
        .unwrap();
    held.commit().await.unwrap();

    let (_, outcome) = copy.await.unwrap();
    let outcome = outcome.unwrap();
    assert!(
        matches!(outcome, Outcome::Complete { mismatches: 0, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        f.digest("moved", "t1").await,
        f.digest("public", "t1").await,
        "the target holds what the source holds, legacy's writes included"
    );
    let progress = f.store().progress(&f.migration, Some(&t1)).await.unwrap();
    let record = f.store().tenant(&f.migration, &t1).await.unwrap();
    assert!(progress[0].complete);
    assert_eq!(
        progress[0].epoch, record.copy_epoch,
        "the completed progress is the new epoch's"
    );
    assert_eq!(record.copy_epoch, 1);
}
