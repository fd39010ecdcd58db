use std::time::Duration;

use ferry_copier::Outcome;
use ferry_domain::Action;
use ferry_store::CopyDirection;
use ferry_testkit::TestStore;

use crate::fixture::{Fixture, tenant};

/// A replication-lag signal over the threshold holds the copier before its first batch, the
/// hold is visible as the tenant's throttle state, and clearing the signal lets it finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_holds_the_copier_until_it_clears() {
    let f = Fixture::new(
        TestStore::sqlite().await,
        &[("t1", 500)],
        serde_json::json!({"backpressure": {
            "lag_query": "SELECT seconds FROM public.fake_lag",
            "max_replication_lag_ms": 2000,
            "hold_poll_ms": 50
        }}),
    )
    .await;
    sqlx::raw_sql(
        "CREATE TABLE public.fake_lag (seconds float8); INSERT INTO public.fake_lag VALUES (10)",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    f.change("t1", Action::Advance).await;
    let copier = f.copier().await;
    let copy = tokio::spawn(async move {
        let outcome = copier
            .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
            .await;
        (copier, outcome)
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    let p = f
        .store()
        .progress(&f.migration, Some(&tenant("t1")))
        .await
        .unwrap();
    assert_eq!(
        p[0].throttled.as_deref(),
        Some("replication lag 10.0s > 2.0s")
    );
    assert_eq!(p[0].rows_done, 0, "held before the first batch");
    assert_eq!(f.digest("moved", "t1").await.0, 0);
    assert!(!copy.is_finished());

    sqlx::query("UPDATE public.fake_lag SET seconds = 0")
        .execute(&f.pool)
        .await
        .unwrap();
    let (_, outcome) = tokio::time::timeout(Duration::from_secs(30), copy)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        outcome.unwrap(),
        Outcome::Complete { rows: 500, .. }
    ));
    let p = f
        .store()
        .progress(&f.migration, Some(&tenant("t1")))
        .await
        .unwrap();
    assert_eq!(p[0].throttled, None);
    assert_eq!(
        f.digest("moved", "t1").await,
        f.digest("public", "t1").await
    );
}
