//! The admin API's tokens and the operator log (`areas/admin.rs`).

use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

both_stores!(
    tokens_are_unique_and_revocable,
    the_operator_log_is_append_only_and_pages,
);

async fn tokens_are_unique_and_revocable(s: &TestStore) {
    let new = |name: &str, scope, hash: &str| NewToken {
        name: name.into(),
        scope,
        sha256: hash.into(),
        created_by: "alice".into(),
    };
    let t = s
        .store
        .create_token(&new("grafana", TokenScope::Read, "aa"))
        .await
        .unwrap();
    assert_eq!((t.scope, t.revoked_at), (TokenScope::Read, None));
    s.store
        .create_token(&new("oncall", TokenScope::Operator, "bb"))
        .await
        .unwrap();
    let err = s
        .store
        .create_token(&new("grafana", TokenScope::Operator, "cc"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(s.store.revoke_token("grafana").await.unwrap());
    assert!(!s.store.revoke_token("grafana").await.unwrap());
    assert!(!s.store.revoke_token("nobody").await.unwrap());
    let all = s.store.tokens().await.unwrap();
    let names: Vec<(&str, bool)> = all
        .iter()
        .map(|t| (t.name.as_str(), t.revoked_at.is_some()))
        .collect();
    assert_eq!(names, [("grafana", true), ("oncall", false)]);
    assert_eq!(all[1].sha256, "bb");
}

async fn the_operator_log_is_append_only_and_pages(s: &TestStore) {
    for i in 1..=5 {
        s.store
            .record_operation(&NewOperation {
                actor: "token:oncall".into(),
                operation: "advance".into(),
                target: format!("m/t{i}"),
                outcome: "ok".into(),
            })
            .await
            .unwrap();
    }
    let recent = s.store.operations(0, 2).await.unwrap();
    let targets: Vec<&str> = recent.iter().map(|o| o.target.as_str()).collect();
    assert_eq!(targets, ["m/t4", "m/t5"], "the most recent, oldest first");
    let next = s.store.operations(recent[0].seq - 3, 2).await.unwrap();
    let targets: Vec<&str> = next.iter().map(|o| o.target.as_str()).collect();
    assert_eq!(targets, ["m/t2", "m/t3"]);
    let refused = match s.store.kind() {
        StoreKind::Postgres => {
            let pg = sqlx::PgPool::connect(&s.url).await.unwrap();
            let delete = sqlx::query("DELETE FROM ferry.ferry_operator_log")
                .execute(&pg)
                .await;
            pg.close().await;
            delete.is_err()
        }
        StoreKind::Sqlite => {
            let path = s.url.trim_start_matches("sqlite://");
            let db = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            let delete = sqlx::query("DELETE FROM ferry_operator_log")
                .execute(&db)
                .await;
            db.close().await;
            delete.is_err()
        }
    };
    assert!(refused, "operator log rows must not be deleted");
    assert_eq!(s.store.operations(0, 100).await.unwrap().len(), 5);
}
