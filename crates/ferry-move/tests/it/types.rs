//! The routed table on the schemas real SaaS backends have: a tenant column of every type
//! Ferry accepts, enum, domain and enum-array columns, NULLs; source and target in two
//! databases, the target created by the copier from the source's catalogue.

use std::sync::Arc;
use std::time::Duration;

use ferry_copier::{Copier, Outcome};
use ferry_domain::{Action, MigrationId, Phase, RouterId, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_move::{MovedTable, Row};
use ferry_router::{Router, RouterSettings};
use ferry_store::{CopyDirection, MigrationKind, NewMigration, TenantSize};
use ferry_testkit::saas::{TENANT_TYPES, create_orders, fill_orders, orders_digest};
use ferry_testkit::{TestDb, TestStore};
use sqlx::PgPool;

fn request() -> Request {
    Request {
        actor: "test".into(),
        reason: "test".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    }
}

async fn advance(engine: &PhaseEngine, router: &Router, m: &MigrationId, t: &TenantId) -> Phase {
    let moved = engine
        .change(m, t, Action::Advance, &request())
        .await
        .unwrap_or_else(|e| panic!("advance {t}: {e}"));
    router.nudge();
    let ack = engine
        .wait_acknowledged(moved.change_version, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(ack.effective(), "{ack:?}");
    moved.to_phase
}

fn order(id: Option<i64>, status: &str, amount: &str) -> Row {
    let mut row = Row::new();
    if let Some(id) = id {
        row.insert("id".into(), serde_json::json!(id));
    }
    row.insert("status".into(), serde_json::json!(status));
    row.insert("amount".into(), serde_json::json!(amount));
    row.insert("history".into(), serde_json::json!(["new", null]));
    row.insert("note".into(), serde_json::Value::Null);
    row
}

/// Writes through the table in the current phase, then checks what it reads back.
async fn write_and_read(table: &MovedTable, tenant: &TenantId, phase: Phase, id: i64) {
    let mut row = order(Some(id), "paid", "3.50");
    row.insert(
        "placed_at".into(),
        serde_json::json!("2025-01-01T00:00:00+00:00"),
    );
    let inserted = table.insert(tenant, row).await.unwrap();
    assert_eq!(
        inserted["tenant_id"].to_string().trim_matches('"'),
        tenant.as_str()
    );
    let mut change = Row::new();
    change.insert("status".into(), serde_json::json!("shipped"));
    let updated = table
        .update(tenant, &[&id.to_string()], change)
        .await
        .unwrap();
    assert_eq!(updated.unwrap()["status"], "shipped", "{phase}");
    assert!(table.delete(tenant, &["4"]).await.is_ok(), "{phase}");
    let read = table
        .get(tenant, &[&id.to_string()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read["status"], "shipped", "{phase}");
    assert_eq!(read["amount"].to_string(), "3.50", "{phase}");
    assert_eq!(read["history"], serde_json::json!(["new", null]), "{phase}");
    assert!(read["note"].is_null(), "{phase}");
}

struct Sides {
    source: PgPool,
    target: PgPool,
}

async fn case(sql: &'static str, tenants: [&'static str; 2]) {
    let (a, b) = (TestDb::new().await, TestDb::new().await);
    let sides = Sides {
        source: ferry_copier::connect(a.url(), "connect").await.unwrap(),
        target: ferry_copier::connect(b.url(), "connect").await.unwrap(),
    };
    create_orders(&sides.source, sql).await;
    for t in tenants {
        fill_orders(&sides.source, sql, t, 20).await;
    }
    let store = TestStore::sqlite().await;
    let m = MigrationId::new("orders_move").unwrap();
    store
        .store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::TenantMove,
            description: String::new(),
            config: serde_json::json!({
                "source": {"schema": "app", "table": "orders"},
                "target": {"schema": "moved", "table": "orders"},
                "tenant_column": "tenant_id", "version_column": "version",
            }),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let sizes: Vec<TenantSize> = tenants
        .iter()
        .map(|t| TenantSize {
            tenant: TenantId::new(*t).unwrap(),
            rows: 20,
        })
        .collect();
    store.store.register_tenants(&m, &sizes).await.unwrap();
    let engine = PhaseEngine::new(store.store.clone(), EngineSettings::default());
    let copier = Copier::open(
        store.store.clone(),
        PhaseEngine::new(store.store.clone(), EngineSettings::default()),
        &m,
        sides.source.clone(),
        sides.target.clone(),
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let router = Arc::new(
        Router::start(
            store.reopen().await,
            RouterSettings {
                heartbeat: Duration::from_millis(50),
                ..RouterSettings::new(RouterId::new("app").unwrap(), "test")
            },
        )
        .await
        .unwrap(),
    );
    let table = MovedTable::open(
        router.clone(),
        store.store.clone(),
        &m,
        sides.source.clone(),
        sides.target.clone(),
    )
    .await
    .unwrap();
    let (t, other) = (TenantId::new(tenants[0]).unwrap(), tenants[1]);
    let untouched = orders_digest(&sides.source, "app", sql, other).await;
    let mut id = 100;
    loop {
        let phase = advance(&engine, &router, &m, &t).await;
        if phase == Phase::DualWrite {
            let outcome = copier
                .copy(&t, CopyDirection::Forward, |_| {})
                .await
                .unwrap();
            assert!(
                matches!(outcome, Outcome::Complete { mismatches: 0, .. }),
                "{sql}: {outcome:?}"
            );
        }
        write_and_read(&table, &t, phase, id).await;
        id += 1;
        if phase == Phase::TargetPrimary {
            break;
        }
    }
    assert_eq!(
        orders_digest(&sides.target, "moved", sql, t.as_str()).await,
        orders_digest(&sides.source, "app", sql, t.as_str()).await,
        "{sql}: both sides hold the same rows"
    );
    assert_eq!(
        orders_digest(&sides.source, "app", sql, other).await,
        untouched
    );
    assert_eq!(orders_digest(&sides.target, "moved", sql, other).await.0, 0);
    // The other tenant's row 3 is not this tenant's: reads never cross.
    let theirs = table
        .get(&TenantId::new(other).unwrap(), &["100"])
        .await
        .unwrap();
    assert!(
        theirs.is_none(),
        "{sql}: tenant {other} read tenant {t}'s row"
    );
    drop(table);
    if let Ok(router) = Arc::try_unwrap(router) {
        router.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_key_type_routes_through_the_phases_across_databases() {
    for t in &TENANT_TYPES {
        case(t.sql, t.tenants).await;
    }
}

/// A tenant id that is not a value of the tenant column's type is refused, naming both,
/// before any statement runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_id_of_the_wrong_type_is_refused_by_name() {
    let db = TestDb::new().await;
    let pool = ferry_copier::connect(db.url(), "connect").await.unwrap();
    create_orders(&pool, "uuid").await;
    sqlx::raw_sql("CREATE SCHEMA moved; CREATE TABLE moved.orders (LIKE app.orders INCLUDING ALL)")
        .execute(&pool)
        .await
        .unwrap();
    let store = TestStore::sqlite().await;
    let m = MigrationId::new("orders_move").unwrap();
    store
        .store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::TenantMove,
            description: String::new(),
            config: serde_json::json!({
                "source": {"schema": "app", "table": "orders"},
                "target": {"schema": "moved", "table": "orders"},
                "tenant_column": "tenant_id", "version_column": "version",
            }),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let router = Arc::new(
        Router::start(
            store.reopen().await,
            RouterSettings::new(RouterId::new("app").unwrap(), "test"),
        )
        .await
        .unwrap(),
    );
    let table = MovedTable::open(router, store.store.clone(), &m, pool.clone(), pool.clone())
        .await
        .unwrap();
    let err = table
        .get(&TenantId::new("acme").unwrap(), &["1"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant id \"acme\" is not a uuid in PostgreSQL's form (lowercase, 8-4-4-4-12 hex digits) (the type of app.orders.tenant_id, uuid)"
    );
}
