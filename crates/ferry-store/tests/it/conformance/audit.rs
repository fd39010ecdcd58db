//! The audit log (`areas/audit.rs`): append-only, paged, newest entries.

use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

use super::{advance, meta, migration_with_tenants, tenant};

both_stores!(
    audit_log_is_append_only,
    recent_audit_is_the_newest_entries_oldest_first,
);

async fn audit_log_is_append_only(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1)]).await;
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    s.store
        .apply_changes(&m, &[advance(&a)], &meta())
        .await
        .unwrap();
    let refused = match s.store.kind() {
        StoreKind::Postgres => {
            let pg = sqlx::PgPool::connect(&s.url).await.unwrap();
            let update = sqlx::query("UPDATE ferry.ferry_audit_log SET actor = 'mallory'")
                .execute(&pg)
                .await;
            let delete = sqlx::query("DELETE FROM ferry.ferry_audit_log")
                .execute(&pg)
                .await;
            pg.close().await;
            update.is_err() && delete.is_err()
        }
        StoreKind::Sqlite => {
            let path = s.url.trim_start_matches("sqlite://");
            let db = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            let update = sqlx::query("UPDATE ferry_audit_log SET actor = 'mallory'")
                .execute(&db)
                .await;
            let delete = sqlx::query("DELETE FROM ferry_audit_log")
                .execute(&db)
                .await;
            db.close().await;
            update.is_err() && delete.is_err()
        }
    };
    assert!(refused, "audit log rows must not be updated or deleted");
    let history = s.store.history(&m, &tenant("a")).await.unwrap();
    assert_eq!(history[0].actor, "alice");
}

async fn recent_audit_is_the_newest_entries_oldest_first(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1), ("c", 1)]).await;
    let other = migration_with_tenants(s, "other", &[("a", 1)]).await;
    for id in ["a", "b", "c"] {
        let t = s.store.tenant(&m, &tenant(id)).await.unwrap();
        s.store
            .apply_changes(&m, &[advance(&t)], &meta())
            .await
            .unwrap();
    }
    let o = s.store.tenant(&other, &tenant("a")).await.unwrap();
    s.store
        .apply_changes(&other, &[advance(&o)], &meta())
        .await
        .unwrap();
    let recent = s.store.recent_audit(&m, 2).await.unwrap();
    let tenants: Vec<&str> = recent.iter().map(|e| e.tenant.as_str()).collect();
    assert_eq!(tenants, ["b", "c"]);
    assert!(recent[0].seq < recent[1].seq);
    assert_eq!(s.store.recent_audit(&m, 10).await.unwrap().len(), 3);
}
