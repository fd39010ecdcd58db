//! Tiering on the schemas real SaaS backends have: a tenant column of every type Ferry
//! accepts; enum, domain and enum-array columns (kept as their text, the type recorded);
//! NULLs. Rows archived, read back from the cold tier exactly, updated while archived.

use std::sync::Arc;
use std::time::Duration;

use ferry_domain::{Action, MigrationId, Phase, RouterId, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_router::{Router, RouterSettings};
use ferry_store::{MigrationKind, NewMigration, TenantSize};
use ferry_testkit::saas::{TENANT_TYPES, create_orders, fill_orders, orders_digest};
use ferry_testkit::{TempDir, TestDb, TestStore};
use ferry_tier::{Row, TieredTable, Tiering};
use sqlx::PgPool;

/// A row as the hot table holds it, in the same JSON form the tiered table returns.
async fn hot_row(pool: &PgPool, tenant_type: &str, tenant: &str, id: i64) -> Row {
    let sql = format!(
        "SELECT to_jsonb(t)::text FROM app.orders t WHERE tenant_id = CAST($1 AS {tenant_type}) AND id = $2"
    );
    let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn advance(engine: &PhaseEngine, tiering: &Tiering, m: &MigrationId, t: &TenantId) -> Phase {
    let request = Request {
        actor: "test".into(),
        reason: "test".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    };
    let mut last = String::new();
    for _ in 0..300 {
        tiering.apply_buffer(t).await.unwrap();
        match engine.change(m, t, Action::Advance, &request).await {
            Ok(moved) => {
                let ack = engine
                    .wait_acknowledged(moved.change_version, Duration::from_secs(20))
                    .await
                    .unwrap();
                assert!(ack.effective());
                return moved.to_phase;
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("advance of {t} never went through: {last}")
}

async fn case(sql: &str, tenants: [&str; 2]) {
    let db = TestDb::new().await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    create_orders(&pool, sql).await;
    for t in tenants {
        fill_orders(&pool, sql, t, 30).await;
    }
    let store = TestStore::sqlite().await;
    let cold = TempDir::new("tier-types");
    let m = MigrationId::new("orders_tier").unwrap();
    store
        .store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::Tiering,
            description: String::new(),
            config: serde_json::json!({
                "schema": "app", "table": "orders", "tenant_column": "tenant_id",
                "age_column": "placed_at",
                "cold_url": format!("file://{}", cold.path().display()),
            }),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let sizes: Vec<TenantSize> = tenants
        .iter()
        .map(|t| TenantSize {
            tenant: TenantId::new(*t).unwrap(),
            rows: 30,
        })
        .collect();
    store.store.register_tenants(&m, &sizes).await.unwrap();
    let tiering = Arc::new(
        Tiering::open(store.store.clone(), &m, pool.clone())
            .await
            .unwrap_or_else(|e| panic!("{sql}: declare: {e}")),
    );
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
    let table = TieredTable::new(tiering.clone(), router.clone());
    let engine = PhaseEngine::new(store.store.clone(), EngineSettings::default());
    let (t, other) = (TenantId::new(tenants[0]).unwrap(), tenants[1]);
    let untouched = orders_digest(&pool, "app", sql, other).await;
    let originals: Vec<Row> = {
        let mut rows = Vec::new();
        for id in 1..=30 {
            rows.push(hot_row(&pool, sql, t.as_str(), id).await);
        }
        rows
    };
    let cutoff = (chrono::Utc::now() - chrono::Duration::days(30)).to_rfc3339();
    assert_eq!(advance(&engine, &tiering, &m, &t).await, Phase::DualWrite);
    let report = tiering.archive(&t, &cutoff).await.unwrap();
    assert_eq!(report.rows, 30, "{sql}: every row is older than the cutoff");
    assert_eq!(advance(&engine, &tiering, &m, &t).await, Phase::Shadow);
    assert_eq!(
        advance(&engine, &tiering, &m, &t).await,
        Phase::TargetPrimary
    );
    assert_eq!(advance(&engine, &tiering, &m, &t).await, Phase::TargetOnly);
    // Every archived row reads back from the cold tier exactly as it was in the hot table.
    for (i, original) in originals.iter().enumerate() {
        let read = table.get(&t, &[&(i + 1).to_string()]).await.unwrap();
        assert_eq!(read.as_ref(), Some(original), "{sql}: row {}", i + 1);
    }
    // An update of an archived row goes through the buffer and reads back at once.
    let mut change = Row::new();
    change.insert("status".into(), serde_json::json!("shipped"));
    change.insert("history".into(), serde_json::json!(["paid", null]));
    let updated = table.update(&t, &["5"], change).await.unwrap().unwrap();
    assert_eq!(updated["status"], "shipped", "{sql}");
    tiering.apply_buffer(&t).await.unwrap();
    let read = table.get(&t, &["5"]).await.unwrap().unwrap();
    assert_eq!(read["status"], "shipped", "{sql}");
    assert_eq!(read["history"], serde_json::json!(["paid", null]), "{sql}");
    assert_eq!(
        read["amount"], originals[4]["amount"],
        "{sql}: the domain's value kept"
    );
    // A value the enum does not have is refused, not archived.
    let mut bad = Row::new();
    bad.insert("status".into(), serde_json::json!("lost"));
    assert!(table.update(&t, &["6"], bad).await.is_err(), "{sql}");
    assert_eq!(
        orders_digest(&pool, "app", sql, other).await,
        untouched,
        "{sql}"
    );
    drop(table);
    if let Ok(router) = Arc::try_unwrap(router) {
        router.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_key_type_and_enum_domain_columns_tier_exactly() {
    for t in &TENANT_TYPES {
        case(t.sql, t.tenants).await;
    }
}
