use std::time::Duration;

use ferry_store::pg::PgStore;
use ferry_store::sqlite::SqliteStore;
use ferry_store::{SCHEMA_VERSION, StoreError, StoreOptions, open};
use ferry_testkit::{TempDir, TestDb};

fn quick() -> StoreOptions {
    StoreOptions {
        connect_timeout: Duration::from_secs(2),
        ..StoreOptions::default()
    }
}

#[tokio::test]
async fn unreachable_postgres_is_a_clear_error() {
    // Port 1 on loopback: nothing listens there.
    let err = match open("postgres://ferry:secret@127.0.0.1:1/ferry", &quick()).await {
        Ok(_) => panic!("opened a store on a closed port"),
        Err(e) => e,
    };
    let message = err.to_string();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{message}");
    assert!(
        message.starts_with(
            "cannot reach the control store at postgres://ferry:***@127.0.0.1:1/ferry"
        ),
        "{message}"
    );
    assert!(
        !message.contains("secret"),
        "passwords never reach messages"
    );
}

#[tokio::test]
async fn sqlite_in_a_missing_directory_is_a_clear_error() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("no/such/dir/ferry.db");
    let err = match open(&format!("sqlite://{}", path.display()), &quick()).await {
        Ok(_) => panic!("opened a store in a missing directory"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    assert!(!path.exists());
}

#[tokio::test]
async fn nonsense_urls_are_refused() {
    let err = match open("mysql://x/y", &quick()).await {
        Ok(_) => panic!("opened mysql"),
        Err(e) => e,
    };
    assert!(matches!(err, StoreError::BadUrl { .. }), "{err}");
}

#[tokio::test]
async fn sqlite_store_of_a_newer_schema_is_refused_untouched() {
    let dir = TempDir::new("newer");
    let path = dir.path().join("ferry.db");
    let store = SqliteStore::open(&path, true, Duration::from_secs(2))
        .await
        .unwrap();
    store
        .force_schema_version(SCHEMA_VERSION + 1)
        .await
        .unwrap();
    store.pool().close().await;
    let before = std::fs::read(&path).unwrap();
    let err = match SqliteStore::open(&path, false, Duration::from_secs(2)).await {
        Ok(_) => panic!("opened a newer store"),
        Err(e) => e,
    };
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade ferry"));
    assert_eq!(before, std::fs::read(&path).unwrap(), "nothing written");
}

#[tokio::test]
async fn postgres_store_of_a_newer_schema_is_refused() {
    let db = TestDb::new().await;
    let schema = quick().pg_schema;
    let store = PgStore::connect(db.url(), &schema, Duration::from_secs(5))
        .await
        .unwrap();
    store
        .force_schema_version(SCHEMA_VERSION + 3)
        .await
        .unwrap();
    let err = match PgStore::connect(db.url(), &schema, Duration::from_secs(5)).await {
        Ok(_) => panic!("opened a newer store"),
        Err(e) => e,
    };
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 3),
        "{err}"
    );
    let version: i64 =
        sqlx::query_scalar("SELECT value FROM ferry_meta WHERE key = 'schema_version'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(version, SCHEMA_VERSION + 3, "the refusal wrote nothing");
}

#[tokio::test]
async fn two_postgres_stores_in_one_database_are_independent() {
    let db = TestDb::new().await;
    let a = PgStore::connect(
        db.url(),
        &ferry_domain::SqlIdent::new("ferry_a").unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let b = PgStore::connect(
        db.url(),
        &ferry_domain::SqlIdent::new("ferry_b").unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    use ferry_store::MigrationStore;
    a.create_migration(&ferry_store::NewMigration {
        id: ferry_domain::MigrationId::new("only_in_a").unwrap(),
        kind: ferry_store::MigrationKind::Import,
        description: String::new(),
        config: serde_json::json!({}),
        created_by: "t".into(),
    })
    .await
    .unwrap();
    assert_eq!(a.migrations().await.unwrap().len(), 1);
    assert!(b.migrations().await.unwrap().is_empty());
}
