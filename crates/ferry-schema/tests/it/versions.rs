//! Which version a write is taken for, and which version the router sends a tenant to.

use std::sync::Arc;
use std::time::Duration;

use ferry_domain::{Action, RouterId, TenantId};
use ferry_router::{RouteOp, Router, RouterSettings};
use ferry_schema::{Version, VersionedTable};
use serde_json::json;
use sqlx::Connection;

use super::fixture::fixture;

fn change_amount() -> serde_json::Value {
    json!([{"op": "change_type", "table": "orders", "column": "amount", "type": "numeric(12,2)",
            "up": "amount::numeric(12,2)", "down": "amount::text"}])
}

/// A client whose `search_path` has the version schema after `"$user"` (PostgreSQL's own
/// default puts `"$user"` first) writes as the new version: its value reaches both shapes.
#[tokio::test]
async fn the_version_schema_anywhere_before_the_base_schema_is_the_new_version() {
    let fx = fixture("g1", change_amount()).await;
    fx.runner().await.start().await.unwrap();
    fx.backfill_all().await;
    let mut conn = sqlx::PgConnection::connect(fx.url()).await.unwrap();
    sqlx::raw_sql(
        "SET search_path TO \"$user\", app_g1, app; \
                   INSERT INTO orders (tenant_id, id, amount) VALUES (1, 900, 9.99)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let (old, new): (Option<String>, Option<String>) = sqlx::query_as(
        "SELECT amount, _ferry_new_amount::text FROM app.orders WHERE tenant_id = 1 AND id = 900",
    )
    .fetch_one(&fx.pool)
    .await
    .unwrap();
    assert_eq!(
        (old.as_deref(), new.as_deref()),
        (Some("9.99"), Some("9.99"))
    );
}

/// `change_type` with a `default`: the new version's inserts that omit the column get it,
/// and so does the table after `complete`.
#[tokio::test]
async fn a_changed_type_takes_its_new_default() {
    let fx = fixture(
        "g2",
        json!([{"op": "change_type", "table": "orders", "column": "legacy", "type": "bigint",
                "up": "legacy::bigint", "down": "legacy::integer", "default": "7"}]),
    )
    .await;
    fx.runner().await.start().await.unwrap();
    fx.backfill_all().await;
    let mut conn = fx.client(true).await;
    sqlx::raw_sql("INSERT INTO orders (tenant_id, id, amount) VALUES (1, 901, '1.00')")
        .execute(&mut conn)
        .await
        .unwrap();
    fx.advance_to_target_only().await;
    fx.runner().await.complete().await.unwrap();
    assert_eq!(
        fx.count("SELECT legacy FROM app.orders WHERE tenant_id = 1 AND id = 901")
            .await,
        7
    );
    assert_eq!(
        fx.count("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'app' AND table_name = 'orders' AND column_name = 'legacy' AND column_default = '7' AND data_type = 'bigint'").await,
        1
    );
}

/// The read switch is per tenant: at `target_primary` a tenant reads the new shape, the
/// other tenant (still at `dual_write`) the old; a step back returns it to the old.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_router_switches_reads_per_tenant_by_phase() {
    let fx = fixture("g3", change_amount()).await;
    fx.runner().await.start().await.unwrap();
    fx.backfill_all().await;
    let router = Arc::new(
        Router::start(
            fx.store.reopen().await,
            RouterSettings {
                heartbeat: Duration::from_millis(50),
                ..RouterSettings::new(RouterId::new("app").unwrap(), "test")
            },
        )
        .await
        .unwrap(),
    );
    let table = VersionedTable::new(router.clone(), fx.m.clone(), "app");
    let (t1, t2) = (TenantId::new("1").unwrap(), TenantId::new("2").unwrap());
    fx.step_one(&t1, Action::Advance).await; // shadow
    fx.step_one(&t1, Action::Advance).await; // target_primary
    router.nudge();
    let amount_type = async |tenant: &TenantId| {
        let (mut tx, routed) = table.begin(&fx.pool, tenant, RouteOp::Read).await.unwrap();
        let ty: String = sqlx::query_scalar(
            "SELECT pg_typeof(amount)::text FROM orders WHERE tenant_id = $1::bigint LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        (routed.version, ty)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while table.route(&t1, RouteOp::Read).unwrap().version != Version::New {
        assert!(
            std::time::Instant::now() < deadline,
            "the router never saw target_primary"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(amount_type(&t1).await, (Version::New, "numeric".to_owned()));
    assert_eq!(amount_type(&t2).await, (Version::Old, "text".to_owned()));
    fx.step_one(&t1, Action::Rollback).await; // back to shadow
    router.nudge();
    while table.route(&t1, RouteOp::Read).unwrap().version != Version::Old {
        assert!(
            std::time::Instant::now() < deadline,
            "the router never saw the rollback"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(amount_type(&t1).await, (Version::Old, "text".to_owned()));
}
