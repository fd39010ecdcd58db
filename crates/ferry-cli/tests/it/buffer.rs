//! `ferry buffer apply`: a tenant move's parked changes applied by the real binary, and the
//! pass `ferry copy run` makes after its copies.

use ferry_domain::{MigrationId, TenantId};
use ferry_testkit::{TempDir, TestDb};

use crate::{ferry, ok, run, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffer_apply_applies_a_tenant_moves_parked_changes() {
    let data = TestDb::new().await;
    let pool = sqlx::PgPool::connect(data.url()).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.orders (tenant_id bigint NOT NULL, id bigint NOT NULL,
             amount numeric(12,2), version bigint NOT NULL DEFAULT 1,
             PRIMARY KEY (tenant_id, id));
         INSERT INTO public.orders (tenant_id, id, amount)
         SELECT 42, i, CASE WHEN i % 4 = 0 THEN NULL ELSE i END FROM generate_series(1, 50) i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let dir = TempDir::new("buffer-apply");
    let store_url = format!("sqlite://{}", dir.path().join("ferry.db").display());
    let url = data.url().to_owned();
    let (store, src) = (store_url.clone(), url.clone());
    tokio::task::spawn_blocking(move || {
        ok(ferry(&store).args(["migration", "create", "orders_move", "--kind", "tenant-move"])
            .args(["--config", r#"{"source": {"table": "orders"}, "target": {"schema": "moved", "table": "orders"}, "tenant_column": "tenant_id", "version_column": "version"}"#]));
        ok(ferry(&store).args(["tenant", "add", "orders_move", "42=50"]));
        ok(ferry(&store).args(["tenant", "advance", "orders_move", "42", "--reason", "move"]));
        ok(ferry(&store).args(["copy", "run", "orders_move", "--create-target", "--source-url", &src]));
    })
    .await
    .unwrap();

    // Two changes the target missed: row 7's new image, and row 9's delete.
    let handle = ferry_store::open(&store_url, &ferry_store::StoreOptions::default())
        .await
        .unwrap();
    let (m, t) = (
        MigrationId::new("orders_move").unwrap(),
        TenantId::new("42").unwrap(),
    );
    let image = serde_json::json!({"tenant_id": 42, "id": 7, "amount": 70.25, "version": 2});
    handle
        .enqueue_update(&m, &t, r#"["7"]"#, "upsert:forward", &image)
        .await
        .unwrap();
    let none = serde_json::Value::Null;
    handle
        .enqueue_update(&m, &t, r#"["9"]"#, "delete:forward", &none)
        .await
        .unwrap();

    let (store, src) = (store_url.clone(), url.clone());
    let (listed, applied, again) = tokio::task::spawn_blocking(move || {
        let listed = ok(ferry(&store).args(["buffer", "list", "orders_move"]));
        let applied =
            ok(ferry(&store).args(["buffer", "apply", "orders_move", "--source-url", &src]));
        let again = run(ferry(&store).args(["copy", "run", "orders_move", "--source-url", &src]));
        (listed, applied, stdout(&again))
    })
    .await
    .unwrap();
    assert!(
        listed.contains("upsert:forward") && listed.contains("delete:forward"),
        "{listed}"
    );
    assert!(
        applied.contains("update buffer: 2 change(s) applied, 0 failed"),
        "{applied}"
    );
    // Nothing left for copy run's own pass to do (it says nothing then).
    assert!(!again.contains("update buffer:"), "{again}");
    let target: Vec<(i64, Option<f64>, i64)> = sqlx::query_as(
        "SELECT id, amount::float8, version FROM moved.orders WHERE id IN (7, 9) ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(target, vec![(7, Some(70.25), 2)]);
    assert!(handle.open_updates(&m).await.unwrap().is_empty());
}
