use sqlx::{Connection, PgConnection};

/// The path a machine without `DATABASE_URL` takes: initdb, pg_ctl start on a free port,
/// connect, and a watchdog that removes everything when this process exits.
#[tokio::test]
async fn a_throwaway_cluster_starts_and_serves() {
    let cluster = tokio::task::spawn_blocking(ferry_testkit::cluster::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("start a throwaway cluster: {e}"));
    assert!(cluster.data_dir.join("PG_VERSION").exists());
    let mut conn = PgConnection::connect(&cluster.url).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(fsync, "off", "a test cluster trades durability for speed");
    conn.close().await.unwrap();
}
