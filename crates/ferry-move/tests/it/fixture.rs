//! The table most tests here share: one database holding `public.orders` (source) and
//! `moved.orders` (target), one tenant, a router, and helpers to move the tenant and read
//! the sides directly.

use std::sync::Arc;
use std::time::Duration;

use ferry_domain::{Action, MigrationId, Phase, RouterId, TenantId};
use ferry_engine::{EngineError, EngineSettings, Moved, PhaseEngine, Request};
use ferry_move::{MovedTable, Row};
use ferry_router::{Router, RouterSettings};
use ferry_store::{MigrationKind, NewMigration, TenantSize};
use ferry_testkit::{TestDb, TestStore};
use sqlx::PgPool;

/// `public.orders` (source) and `moved.orders` (target) in one database, tenant `t1` with
/// rows 1..=10 on both sides, a router and the table over them.
pub struct Fixture {
    pub data: TestDb,
    pub store: TestStore,
    pub pool: PgPool,
    pub m: MigrationId,
    pub t1: TenantId,
    pub router: Arc<Router>,
    pub table: MovedTable,
}

pub async fn fixture() -> Fixture {
    let data = TestDb::new().await;
    let pool = ferry_copier::connect(data.url(), "connect").await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.orders (
             tenant_id text NOT NULL, id bigint NOT NULL, note text,
             version bigint NOT NULL DEFAULT 1, PRIMARY KEY (tenant_id, id));
         INSERT INTO public.orders (tenant_id, id, note)
             SELECT 't1', i, 'n' || i FROM generate_series(1, 10) i;
         CREATE SCHEMA moved;
         CREATE TABLE moved.orders (LIKE public.orders INCLUDING ALL);
         INSERT INTO moved.orders SELECT * FROM public.orders;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = TestStore::postgres().await;
    let m = MigrationId::new("orders_move").unwrap();
    store
        .store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::TenantMove,
            description: String::new(),
            config: serde_json::json!({
                "source": {"schema": "public", "table": "orders"},
                "target": {"schema": "moved", "table": "orders"},
                "tenant_column": "tenant_id", "version_column": "version"
            }),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let t1 = TenantId::new("t1").unwrap();
    store
        .store
        .register_tenants(
            &m,
            &[TenantSize {
                tenant: t1.clone(),
                rows: 10,
            }],
        )
        .await
        .unwrap();
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
        pool.clone(),
        pool.clone(),
    )
    .await
    .unwrap();
    Fixture {
        data,
        store,
        pool,
        m,
        t1,
        router,
        table,
    }
}

impl Fixture {
    /// Forces the tenant to `phase` (the guards are not what these tests are about) and waits
    /// until the router routes by it.
    pub async fn enter(&self, phase: Phase) {
        let engine = PhaseEngine::new(self.store.store.clone(), EngineSettings::default());
        let mut now = self
            .store
            .store
            .tenant(&self.m, &self.t1)
            .await
            .unwrap()
            .state
            .phase;
        while now != phase {
            let moved = self.advance(true).await.unwrap();
            engine
                .wait_acknowledged(moved.change_version, Duration::from_secs(10))
                .await
                .unwrap();
            now = moved.to_phase;
        }
        self.router.nudge();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.router.phase(self.m.as_str(), "t1").unwrap().phase != phase {
            assert!(
                std::time::Instant::now() < deadline,
                "router never reached {phase}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn note(&self, schema: &str, id: i64) -> Option<Option<String>> {
        let sql = format!("SELECT note FROM {schema}.orders WHERE tenant_id = 't1' AND id = $1");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    /// A trigger on `schema.orders` that fails the COMMIT of any transaction writing a row
    /// whose note is `fail-at-commit`: a deferred constraint, as real schemas have.
    pub async fn fail_commits_on(&self, schema: &str) {
        let sql = format!(
            "CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.note = 'fail-at-commit' THEN
                     RAISE EXCEPTION 'refused at commit';
                 END IF;
                 RETURN NULL;
             END $$;
             CREATE CONSTRAINT TRIGGER refuse AFTER INSERT OR UPDATE ON {schema}.orders
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.refuse();"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&self.pool)
            .await
            .unwrap();
    }
}

pub fn row(id: Option<i64>, note: &str) -> Row {
    let mut row = Row::new();
    if let Some(id) = id {
        row.insert("id".into(), serde_json::json!(id));
    }
    row.insert("note".into(), serde_json::json!(note));
    row
}

/// Lock requests waiting in sessions of the data database.
pub async fn waiting(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE NOT l.granted AND a.datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Fixture {
    /// Moves the tenant one phase on, forced (nothing is copied here), without waiting for
    /// routers: one still holding the old phase's snapshot lags.
    pub async fn force_advance(&self) -> Phase {
        self.advance(true).await.unwrap().to_phase
    }

    /// Asks the engine to move t1 one phase on, `force`d past the guards or not.
    pub async fn advance(&self, force: bool) -> Result<Moved, EngineError> {
        let engine = PhaseEngine::new(self.store.store.clone(), EngineSettings::default());
        let request = Request {
            actor: "test".into(),
            reason: "test".into(),
            force,
            dry_run: false,
            expect_phase: None,
        };
        engine
            .change(&self.m, &self.t1, Action::Advance, &request)
            .await
    }

    /// A second application process: its own router (which loads the current phases) and
    /// table.
    pub async fn second_router(&self) -> (Arc<Router>, MovedTable) {
        let router = Arc::new(
            Router::start(
                self.store.reopen().await,
                RouterSettings {
                    heartbeat: Duration::from_millis(50),
                    ..RouterSettings::new(RouterId::new("app-2").unwrap(), "test")
                },
            )
            .await
            .unwrap(),
        );
        let table = MovedTable::open(
            router.clone(),
            self.store.store.clone(),
            &self.m,
            self.pool.clone(),
            self.pool.clone(),
        )
        .await
        .unwrap();
        (router, table)
    }

    /// The table over other pools (through a fault proxy, say), routed by this router.
    pub async fn table_over(&self, source: PgPool, target: PgPool) -> MovedTable {
        MovedTable::open(
            self.router.clone(),
            self.store.store.clone(),
            &self.m,
            source,
            target,
        )
        .await
        .unwrap()
    }

    /// What `schema.orders` holds for tenant t1, key by key: `(id, note, version)`.
    pub async fn rows(&self, schema: &str) -> Vec<(i64, Option<String>, i64)> {
        let sql = format!(
            "SELECT id, note, version FROM {schema}.orders WHERE tenant_id = 't1' ORDER BY id"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

/// A small pool through a fault proxy, failing fast when it cannot connect.
pub async fn through(proxy: &ferry_testkit::FaultProxy) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(1))
        .connect_with(proxy.options())
        .await
        .unwrap()
}
