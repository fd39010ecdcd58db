use std::time::{Duration, Instant};

use ferry_copier::Outcome;
use ferry_domain::Action;
use ferry_store::CopyDirection;
use ferry_testkit::{Replicated, TestDb, TestStore};

use crate::fixture::{Fixture, tenant};

/// The replay delay the copier reads from a replica (see `backpressure.rs`).
async fn replay_delay(standby: &sqlx::PgPool) -> f64 {
    sqlx::query_scalar(
        "SELECT CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
                ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8",
    )
    .fetch_one(standby)
    .await
    .unwrap()
}

async fn replayed_a_transaction(standby: &sqlx::PgPool) -> bool {
    sqlx::query_scalar("SELECT pg_last_xact_replay_timestamp() IS NOT NULL")
        .fetch_one(standby)
        .await
        .unwrap()
}

/// Real replication lag holds the copier before its first batch: a streaming hot standby of
/// the source, its replay paused while the primary writes, is given at run time
/// (`--lag-replica-url`); the hold shows as the tenant's throttle state, and resuming replay
/// lets the copy finish. No SQL comes from the migration's config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_lag_holds_the_copier_until_replay_catches_up() {
    let cluster = Replicated::start();
    let data = TestDb::new_on(&cluster.primary.url).await;
    let standby = sqlx::PgPool::connect(&cluster.standby_url).await.unwrap();
    let f = Fixture::on(
        data,
        TestStore::sqlite().await,
        &[("t1", 500)],
        serde_json::json!({"backpressure": {
            "lag_source": "none",
            "max_replication_lag_ms": 1000,
            "hold_poll_ms": 50,
            "latency_factor": 0
        }}),
    )
    .await;
    f.change("t1", Action::Advance).await;
    // The standby's delay is measured from its last replayed transaction: wait until it has
    // replayed one (the fixture's tables), or a loaded machine pauses it before any and the
    // delay reads as 0 however far behind it falls.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !replayed_a_transaction(&standby).await {
        assert!(
            Instant::now() < deadline,
            "the standby never replayed a transaction"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Pause replay, then write on the primary: the standby receives WAL it does not apply,
    // and its lag grows past the threshold.
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&standby)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while replay_delay(&standby).await < 1.5 {
        assert!(Instant::now() < deadline, "the standby never fell behind");
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS public.churn (x int); INSERT INTO public.churn VALUES (1)",
        )
        .execute(&f.pool)
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let copier = f.copier().await.watch_replicas(vec![standby.clone()]);
    let copy = tokio::spawn(async move {
        let outcome = copier
            .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
            .await;
        (copier, outcome)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let throttled = loop {
        let p = f
            .store()
            .progress(&f.migration, Some(&tenant("t1")))
            .await
            .unwrap();
        if let Some(why) = p.first().and_then(|p| p.throttled.clone()) {
            assert_eq!(p[0].rows_done, 0, "held before the first batch");
            break why;
        }
        assert!(
            Instant::now() < deadline,
            "the copier never reported a hold"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        throttled.starts_with("replication lag ") && throttled.ends_with("> 1.0s"),
        "{throttled}"
    );
    assert_eq!(f.digest("moved", "t1").await.0, 0);
    assert!(!copy.is_finished());

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&standby)
        .await
        .unwrap();
    let (_, outcome) = tokio::time::timeout(Duration::from_secs(60), copy)
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

/// A stored `lag_query` is refused by name: Ferry runs no SQL from a migration's config.
#[test]
fn a_stored_lag_query_is_refused() {
    let config = serde_json::json!({
        "source": {"schema": "public", "table": "orders"},
        "target": {"schema": "moved", "table": "orders"},
        "tenant_column": "tenant_id", "version_column": "version",
        "backpressure": {"lag_query": "SELECT 1"}
    });
    let err = ferry_copier::TenantMoveConfig::from_json(&config).unwrap_err();
    assert!(
        err.to_string()
            .contains("backpressure.lag_query is no longer read")
            && err.to_string().contains("lag_source"),
        "{err}"
    );
}
