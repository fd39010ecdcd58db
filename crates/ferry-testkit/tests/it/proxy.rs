//! The fault proxy's modes, each against the real server: latency a query sees, a reset that
//! errors a connection and a pool that recovers, a blackhole that hangs queries (new
//! connections too) until cleared.

use std::time::{Duration, Instant};

use ferry_testkit::{FaultProxy, server_url};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

async fn pool(proxy: &FaultProxy) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(proxy.options())
        .await
        .unwrap()
}

async fn one(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT 1").fetch_one(pool).await
}

#[tokio::test]
async fn latency_is_added_per_direction_and_cleared_at_run_time() {
    let proxy = FaultProxy::start(&server_url()).await;
    let pool = pool(&proxy).await;
    one(&pool).await.unwrap();
    proxy.set_latency(Duration::from_millis(150), Duration::from_millis(100));
    let started = Instant::now();
    one(&pool).await.unwrap();
    let slow = started.elapsed();
    assert!(slow >= Duration::from_millis(250), "took {slow:?}");
    // Delays do not add up per message: a query's answer is several messages.
    assert!(slow < Duration::from_millis(1500), "took {slow:?}");
    assert!(proxy.counters().delayed >= 2);
    proxy.clear();
    let started = Instant::now();
    one(&pool).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn a_reset_errors_open_connections_and_the_pool_recovers() {
    let proxy = FaultProxy::start(&server_url()).await;
    let pool = pool(&proxy).await;
    let mut held = pool.acquire().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut *held).await.unwrap();
    assert_eq!(proxy.counters().open, 1);
    proxy.reset_all().await;
    let after = proxy.counters();
    assert_eq!((after.reset, after.open), (1, 0), "{after:?}");
    let failed = sqlx::query("SELECT 1").execute(&mut *held).await;
    assert!(failed.is_err(), "a reset connection must fail: {failed:?}");
    drop(held);
    assert_eq!(one(&pool).await.unwrap(), 1, "the pool reconnects");
    assert!(proxy.counters().connections >= 2);
}

#[tokio::test]
async fn a_blackhole_hangs_queries_and_new_connections_until_cleared() {
    let proxy = FaultProxy::start(&server_url()).await;
    let pool = pool(&proxy).await;
    one(&pool).await.unwrap();
    proxy.set_blackhole(true);
    let hung = tokio::time::timeout(Duration::from_millis(300), one(&pool)).await;
    assert!(hung.is_err(), "a blackholed query must hang: {hung:?}");
    let options = proxy.options();
    let connect = PgConnection::connect_with(&options);
    let hung = tokio::time::timeout(Duration::from_millis(300), connect).await;
    assert!(
        hung.is_err(),
        "a connection opened in a blackhole must hang"
    );
    let counters = proxy.counters();
    assert_eq!(counters.blackholes, 1);
    assert!(counters.held >= 2, "{counters:?}");
    // A query started in the blackhole completes once it clears.
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { one(&pool).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "nothing passes a blackhole");
    proxy.set_blackhole(false);
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    assert_eq!(one(&pool).await.unwrap(), 1);
}
