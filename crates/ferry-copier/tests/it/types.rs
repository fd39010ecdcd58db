//! The tenant keys and column types real schemas use: tenant columns of type text, varchar,
//! integer, bigint and uuid; enum and domain columns (in a schema off the search path, and an
//! array of an enum); NULLs in every nullable column. Each copied within one database and
//! across two, the target created by the copier from the source's catalogue.

use ferry_copier::{Copier, CopyError, Outcome};
use ferry_domain::{Action, MigrationId, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine};
use ferry_store::{CopyDirection, MigrationKind, NewMigration, TenantSize};
use ferry_testkit::saas::{TENANT_TYPES, TenantType, create_orders, fill_orders, orders_digest};
use ferry_testkit::{TestDb, TestStore};
use sqlx::PgPool;

use crate::fixture::req;

async fn migration(store: &TestStore, tenants: &[&str]) -> MigrationId {
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
                "copy": {"min_batch": 20, "max_batch": 100, "start_batch": 30},
            }),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let sizes: Vec<TenantSize> = tenants
        .iter()
        .map(|t| TenantSize {
            tenant: TenantId::new(*t).unwrap(),
            rows: 250,
        })
        .collect();
    store.store.register_tenants(&m, &sizes).await.unwrap();
    m
}

/// Copies both tenants of a case from `source` to `target` (the same pool or another
/// database's) and checks every row arrived exactly, validation clean.
async fn copy_case(case: &TenantType, source: &PgPool, target: &PgPool) {
    let store = TestStore::sqlite().await;
    let m = migration(&store, &case.tenants).await;
    let engine = PhaseEngine::new(store.store.clone(), EngineSettings::default());
    let copier = Copier::open(
        store.store.clone(),
        PhaseEngine::new(store.store.clone(), EngineSettings::default()),
        &m,
        source.clone(),
        target.clone(),
        true,
    )
    .await
    .unwrap_or_else(|e| panic!("{}: plan: {e}", case.sql));
    for t in case.tenants {
        let tenant = TenantId::new(t).unwrap();
        engine
            .change(&m, &tenant, Action::Advance, &req())
            .await
            .unwrap();
        let outcome = copier
            .copy(&tenant, CopyDirection::Forward, |_| {})
            .await
            .unwrap_or_else(|e| panic!("{}: copy {t}: {e}", case.sql));
        assert_eq!(
            outcome,
            Outcome::Complete {
                rows: 250,
                repaired: 0,
                mismatches: 0,
                resumed_at: 0,
            },
            "{}: {t}",
            case.sql
        );
        assert_eq!(
            orders_digest(target, "moved", case.sql, t).await,
            orders_digest(source, "app", case.sql, t).await,
            "{}: {t} arrived exactly",
            case.sql
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_key_type_copies_within_one_database() {
    for case in &TENANT_TYPES {
        let db = TestDb::new().await;
        let pool = ferry_copier::connect(db.url(), "connect").await.unwrap();
        create_orders(&pool, case.sql).await;
        for t in case.tenants {
            fill_orders(&pool, case.sql, t, 250).await;
        }
        copy_case(case, &pool, &pool).await;
    }
}

/// Across databases the target does not exist: the copier creates it (the enum and the
/// domain it needs included) from the source's catalogue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_key_type_copies_across_databases_into_a_created_target() {
    for case in &TENANT_TYPES {
        let (a, b) = (TestDb::new().await, TestDb::new().await);
        let source = ferry_copier::connect(a.url(), "connect").await.unwrap();
        let target = ferry_copier::connect(b.url(), "connect").await.unwrap();
        create_orders(&source, case.sql).await;
        for t in case.tenants {
            fill_orders(&source, case.sql, t, 250).await;
        }
        copy_case(case, &source, &target).await;
        // The created table keeps the key, NOT NULLs and collations of the source.
        let shape = "SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) \
                     || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END \
                     || coalesce(' collate ' || (SELECT collname FROM pg_collation WHERE oid = a.attcollation AND a.attcollation <> 100), ''), ', ' ORDER BY a.attnum) \
                     FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped";
        let of = |pool: &PgPool, table: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(shape)
                    .bind(table)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            of(&target, "moved.orders").await,
            of(&source, "app.orders").await,
            "{}",
            case.sql
        );
    }
}

/// A tenant id that is not a value of the tenant column's type is refused before anything
/// is copied, naming the id and the type; a tenant column of another type is refused when
/// the plan is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_ids_and_tenant_column_types_are_checked_up_front() {
    let db = TestDb::new().await;
    let pool = ferry_copier::connect(db.url(), "connect").await.unwrap();
    create_orders(&pool, "bigint").await;
    fill_orders(&pool, "bigint", "42", 10).await;
    let store = TestStore::sqlite().await;
    let m = migration(&store, &["42", "acme", "007"]).await;
    let engine = PhaseEngine::new(store.store.clone(), EngineSettings::default());
    let copier = Copier::open(
        store.store.clone(),
        PhaseEngine::new(store.store.clone(), EngineSettings::default()),
        &m,
        pool.clone(),
        pool.clone(),
        true,
    )
    .await
    .unwrap();
    for (t, expected) in [
        ("acme", "tenant id \"acme\" is not a bigint"),
        (
            "007",
            "tenant id \"007\" is not a bigint written without leading zeros",
        ),
    ] {
        let tenant = TenantId::new(t).unwrap();
        engine
            .change(&m, &tenant, Action::Advance, &req())
            .await
            .unwrap();
        let err = copier
            .copy(&tenant, CopyDirection::Forward, |_| {})
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains(expected) && err.to_string().contains("app.orders.tenant_id"),
            "{err}"
        );
    }
    let moved: i64 = sqlx::query_scalar("SELECT count(*) FROM moved.orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(moved, 0, "nothing was copied for a refused tenant");

    let other = TestDb::new().await;
    let pool = ferry_copier::connect(other.url(), "connect").await.unwrap();
    create_orders(&pool, "numeric").await;
    let store = TestStore::sqlite().await;
    let m = migration(&store, &["1"]).await;
    let err = match Copier::open(
        store.store.clone(),
        PhaseEngine::new(store.store.clone(), EngineSettings::default()),
        &m,
        pool.clone(),
        pool.clone(),
        true,
    )
    .await
    {
        Err(e) => e,
        Ok(_) => panic!("a numeric tenant column was accepted"),
    };
    assert!(matches!(err, CopyError::Plan(_)), "{err}");
    assert!(
        err.to_string()
            .contains("tenant column tenant_id of app.orders: a tenant column of type numeric is not supported"),
        "{err}"
    );
}

/// Item 11 of the review: typed comparison called different data the same: unconstrained
/// numerics of another scale (`1.0` and `1.00`), `-0` and `0` floats, and strings equal
/// under a nondeterministic (case-insensitive) collation. Validation now compares those as
/// text (or bytes), so each tampered row is found, by the digest and by the merge alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_tells_apart_what_users_would_call_different_data() {
    let db = TestDb::new().await;
    let pool = ferry_copier::connect(db.url(), "connect").await.unwrap();
    sqlx::raw_sql(
        "CREATE COLLATION case_insensitive (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE SCHEMA app;
         CREATE TABLE app.orders (
             tenant_id text NOT NULL, id bigint NOT NULL, x numeric, f float8,
             name text COLLATE case_insensitive, version bigint NOT NULL DEFAULT 1,
             PRIMARY KEY (tenant_id, id));
         INSERT INTO app.orders (tenant_id, id, x, f, name)
             SELECT 'acme', i, 1.0, 0.0, 'Acme' FROM generate_series(1, 10) i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = TestStore::sqlite().await;
    let m = migration(&store, &["acme"]).await;
    let engine = PhaseEngine::new(store.store.clone(), EngineSettings::default());
    let copier = Copier::open(
        store.store.clone(),
        PhaseEngine::new(store.store.clone(), EngineSettings::default()),
        &m,
        pool.clone(),
        pool.clone(),
        true,
    )
    .await
    .unwrap();
    let acme = TenantId::new("acme").unwrap();
    engine
        .change(&m, &acme, Action::Advance, &req())
        .await
        .unwrap();
    let outcome = copier
        .copy(&acme, CopyDirection::Forward, |_| {})
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Complete { mismatches: 0, .. }),
        "{outcome:?}"
    );
    sqlx::raw_sql(
        "UPDATE moved.orders SET x = 1.00 WHERE id = 2;
         UPDATE moved.orders SET f = '-0' WHERE id = 4;
         UPDATE moved.orders SET name = 'ACME' WHERE id = 6;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let diff = copier.verify(&acme, CopyDirection::Forward).await.unwrap();
    assert_eq!(
        diff.differing,
        ["[\"2\"]", "[\"4\"]", "[\"6\"]"],
        "every tampered row is found: {diff:?}"
    );
}
