//! Migrations, tenants and cohorts (`areas/migrations.rs`), and the schema a store opens with.

use std::collections::HashSet;

use ferry_domain::{Cohort, Percent, Phase, TenantPhase};
use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

use super::{advance, meta, mig, migration_with_tenants, tenant};

both_stores!(
    schema_is_versioned_and_reopening_is_idempotent,
    migrations_are_created_once_and_listed,
    tenants_register_in_legacy_and_update_sizes,
    unknown_things_are_clear_errors,
    cohorts_select_by_list_percent_and_size,
    tenants_list_filters_and_paginates,
);

async fn schema_is_versioned_and_reopening_is_idempotent(s: &TestStore) {
    let m = migration_with_tenants(s, "m1", &[("a", 1)]).await;
    // A second process opening the same store neither fails nor loses data.
    let again = s.reopen().await;
    assert_eq!(again.migration(&m).await.unwrap().id, m);
    assert_eq!(again.change_version().await.unwrap(), 0);
}

async fn migrations_are_created_once_and_listed(s: &TestStore) {
    let m = migration_with_tenants(s, "orders_move", &[]).await;
    let got = s.store.migration(&m).await.unwrap();
    assert_eq!(got.kind, MigrationKind::TenantMove);
    assert_eq!(got.config, serde_json::json!({"table": "orders"}));
    assert_eq!(got.created_by, "alice");
    let dup = s
        .store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::Tiering,
            description: String::new(),
            config: serde_json::json!({}),
            created_by: "bob".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(dup, StoreError::MigrationExists(ref id) if *id == m),
        "{dup}"
    );
    // The refused duplicate changed nothing.
    assert_eq!(
        s.store.migration(&m).await.unwrap().kind,
        MigrationKind::TenantMove
    );
    migration_with_tenants(s, "a_first", &[]).await;
    let ids: Vec<String> = s
        .store
        .migrations()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(ids, ["a_first", "orders_move"]);
}

async fn tenants_register_in_legacy_and_update_sizes(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 10), ("b", 20)]).await;
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    assert_eq!(a.state, TenantPhase::INITIAL);
    assert_eq!(a.rows, 10);
    assert_eq!(a.cohort_bucket, ferry_domain::hash_bucket(&m, &tenant("a")));
    let added = s
        .store
        .register_tenants(
            &m,
            &[
                TenantSize {
                    tenant: tenant("a"),
                    rows: 11,
                },
                TenantSize {
                    tenant: tenant("c"),
                    rows: 5,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(added, 1, "only c is new");
    // Duplicates within one registration: the last one wins, on both stores.
    let dup = |rows| TenantSize {
        tenant: tenant("d"),
        rows,
    };
    let added = s
        .store
        .register_tenants(&m, &[dup(1), dup(2), dup(3)])
        .await
        .unwrap();
    assert_eq!(added, 1);
    assert_eq!(s.store.tenant(&m, &tenant("d")).await.unwrap().rows, 3);
    assert_eq!(s.store.tenant(&m, &tenant("a")).await.unwrap().rows, 11);
    assert_eq!(s.store.tenant(&m, &tenant("c")).await.unwrap().rows, 5);
}

async fn unknown_things_are_clear_errors(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1)]).await;
    let err = s.store.migration(&mig("nope")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "migration nope does not exist (see `ferry migration list`)"
    );
    let err = s.store.tenant(&m, &tenant("zz")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant zz is not registered in migration m (see `ferry tenant add`)"
    );
    let err = s
        .store
        .tenant(&mig("nope"), &tenant("a"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MigrationNotFound(_)), "{err}");
    let err = s
        .store
        .register_tenants(
            &mig("nope"),
            &[TenantSize {
                tenant: tenant("a"),
                rows: 1,
            }],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MigrationNotFound(_)), "{err}");
    assert!(matches!(
        s.store.history(&m, &tenant("zz")).await.unwrap_err(),
        StoreError::TenantNotFound { .. }
    ));
}

async fn cohorts_select_by_list_percent_and_size(s: &TestStore) {
    let names: Vec<String> = (0..2000).map(|i| format!("tenant-{i}")).collect();
    let tenants: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), ((i * 7919) % 2000) as u64))
        .collect();
    let m = migration_with_tenants(s, "m", &tenants).await;

    let listed = s
        .store
        .cohort(
            &m,
            &Cohort::Explicit(vec![
                tenant("tenant-5"),
                tenant("tenant-9"),
                tenant("ghost"),
            ]),
        )
        .await
        .unwrap();
    let ids: Vec<_> = listed.iter().map(|t| t.tenant.to_string()).collect();
    assert_eq!(ids, ["tenant-5", "tenant-9"], "unknown tenants are absent");

    let ten = s
        .store
        .cohort(&m, &Cohort::Percent(Percent::parse("10").unwrap()))
        .await
        .unwrap();
    let twenty = s
        .store
        .cohort(&m, &Cohort::Percent(Percent::parse("20").unwrap()))
        .await
        .unwrap();
    assert!((150..=250).contains(&ten.len()), "{} in 10%", ten.len());
    let ten_ids: HashSet<_> = ten.iter().map(|t| t.tenant.clone()).collect();
    let twenty_ids: HashSet<_> = twenty.iter().map(|t| t.tenant.clone()).collect();
    assert!(ten_ids.is_subset(&twenty_ids), "widening keeps the canary");
    let again = s
        .store
        .cohort(&m, &Cohort::Percent(Percent::parse("10").unwrap()))
        .await
        .unwrap();
    assert_eq!(ten, again, "stable");
    for t in &ten {
        assert_eq!(t.cohort_bucket, ferry_domain::hash_bucket(&m, &t.tenant));
        assert!(t.cohort_bucket < 1000);
    }

    let smallest = s.store.cohort(&m, &Cohort::SmallestFirst(3)).await.unwrap();
    let sizes: Vec<u64> = smallest.iter().map(|t| t.rows).collect();
    assert_eq!(sizes, [0, 1, 2]);
}

async fn tenants_list_filters_and_paginates(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1), ("c", 1), ("d", 1)]).await;
    let b = s.store.tenant(&m, &tenant("b")).await.unwrap();
    s.store
        .apply_changes(&m, &[advance(&b)], &meta())
        .await
        .unwrap();
    let ids = |v: Vec<TenantRecord>| -> Vec<String> {
        v.into_iter().map(|t| t.tenant.to_string()).collect()
    };
    let legacy = s
        .store
        .tenants(
            &m,
            &TenantQuery {
                phase: Some(Phase::Legacy),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(legacy), ["a", "c", "d"]);
    let page = s
        .store
        .tenants(
            &m,
            &TenantQuery {
                after: Some(tenant("a")),
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(page), ["b", "c"]);
}
