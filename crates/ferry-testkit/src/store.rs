use std::sync::Arc;

use ferry_store::{ControlStore, StoreOptions};

use crate::{TempDir, TestDb};

/// A control store for one test, of either kind, cleaned up on drop.
pub struct TestStore {
    pub store: Arc<dyn ControlStore>,
    pub url: String,
    _db: Option<TestDb>,
    _dir: Option<TempDir>,
}

impl TestStore {
    pub async fn sqlite() -> TestStore {
        let dir = TempDir::new("store");
        let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
        let store = ferry_store::open(&url, &StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
        TestStore {
            store,
            url,
            _db: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> TestStore {
        let db = TestDb::new().await;
        let url = db.url().to_owned();
        let store = ferry_store::open(&url, &StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
        TestStore {
            store,
            url,
            _db: Some(db),
            _dir: None,
        }
    }

    /// Another `TestStore` on the same store (sharing its files or database), for fixtures that
    /// take ownership of one.
    pub async fn reopen_as_test_store(&self) -> TestStore {
        TestStore {
            store: self.reopen().await,
            url: self.url.clone(),
            _db: None,
            _dir: None,
        }
    }

    /// Opens another handle on the same store, as a second process would.
    pub async fn reopen(&self) -> Arc<dyn ControlStore> {
        ferry_store::open(&self.url, &StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("reopen {}: {e}", self.url))
    }
}

/// Runs each listed `async fn(&TestStore)` once against SQLite and once against PostgreSQL,
/// as `sqlite::<name>` and `postgres::<name>`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = $crate::TestStore::sqlite().await;
                    super::$name(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = $crate::TestStore::postgres().await;
                    super::$name(&store).await;
                }
            )*
        }
    };
}
