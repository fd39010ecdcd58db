//! Schema `app` in a database of the test's own: `orders` keyed `(tenant_id bigint, id
//! bigint)` with text amounts, NULL emails, an enum status and a NOT NULL column with a
//! default; `customers`; an index and a check constraint. Tenants 1 and 2, 40 orders each,
//! registered in a control store under a `schema_change` migration.

use std::sync::Arc;
use std::time::Duration;

use ferry_domain::{Action, MigrationId, Phase, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_schema::backfill::{Backfill, Outcome};
use ferry_schema::catalogue::snapshot;
use ferry_schema::{Resolved, Runner};

use ferry_store::{MigrationKind, NewMigration, TenantSize};
use ferry_testkit::{TestDb, TestStore};
use sqlx::{AssertSqlSafe, PgPool};

pub const BASE: &str = "
    CREATE SCHEMA app;
    CREATE TYPE app.status AS ENUM ('new', 'paid');
    CREATE TABLE app.customers (tenant_id bigint NOT NULL, id bigint NOT NULL, name text,
        PRIMARY KEY (tenant_id, id));
    CREATE TABLE app.orders (tenant_id bigint NOT NULL, id bigint NOT NULL, amount text,
        email text, note text, status app.status, customer_id bigint,
        legacy integer NOT NULL DEFAULT 0, PRIMARY KEY (tenant_id, id),
        CONSTRAINT orders_amount_len CHECK (length(amount) < 100));
    CREATE INDEX orders_note_idx ON app.orders (note);
    INSERT INTO app.customers SELECT t, i, 'c' || i FROM generate_series(1, 2) t, generate_series(1, 5) i;
    INSERT INTO app.orders (tenant_id, id, amount, email, note, status, customer_id)
        SELECT t, i, i || '.50', CASE WHEN i % 2 = 0 THEN NULL ELSE 'e' || i || '@x.test' END,
               'n' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'new'::app.status END,
               CASE WHEN i % 4 = 0 THEN NULL ELSE i % 5 + 1 END
        FROM generate_series(1, 2) t, generate_series(1, 40) i;";

pub struct Fx {
    pub _db: TestDb,
    pub pool: PgPool,
    pub store: TestStore,
    pub m: MigrationId,
    pub plan: serde_json::Value,
    pub tenants: Vec<TenantId>,
}

pub async fn fixture(migration: &str, operations: serde_json::Value) -> Fx {
    let db = TestDb::new().await;
    let pool = ferry_copier::connect(db.url(), "connect").await.unwrap();
    sqlx::raw_sql(BASE).execute(&pool).await.unwrap();
    let plan = serde_json::json!({
        "schema": "app",
        "lock_timeout_ms": 500,
        "backfill": {"min_batch": 7, "start_batch": 7, "max_batch": 50},
        "operations": operations,
    });
    let store = TestStore::sqlite().await;
    let m = MigrationId::new(migration).unwrap();
    store
        .store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::SchemaChange,
            description: String::new(),
            config: plan.clone(),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let tenants: Vec<TenantId> = ["1", "2"]
        .iter()
        .map(|t| TenantId::new(*t).unwrap())
        .collect();
    let sizes: Vec<TenantSize> = tenants
        .iter()
        .map(|t| TenantSize {
            tenant: t.clone(),
            rows: 40,
        })
        .collect();
    store.store.register_tenants(&m, &sizes).await.unwrap();
    Fx {
        _db: db,
        pool,
        store,
        m,
        plan,
        tenants,
    }
}

impl Fx {
    pub async fn resolved(&self) -> Resolved {
        self.runner().await.resolved().clone()
    }

    /// The runner, as every command opens it.
    pub async fn runner(&self) -> Runner {
        ferry_schema::runner::open(self.pool.clone(), &self.m, &self.plan)
            .await
            .unwrap_or_else(|e| panic!("open the plan: {e}"))
    }

    pub async fn snapshot(&self) -> Vec<String> {
        snapshot(&self.pool, "app").await.unwrap()
    }

    fn engine(&self) -> PhaseEngine {
        PhaseEngine::new(self.store.store.clone(), EngineSettings::default())
    }

    /// Moves every tenant one phase by `action` through the phase engine, guards included.
    pub async fn step_all(&self, action: Action) -> Phase {
        let request = Request {
            actor: "test".into(),
            reason: "test".into(),
            force: false,
            dry_run: false,
            expect_phase: None,
        };
        let mut to = Phase::Legacy;
        for t in &self.tenants {
            let moved = self
                .engine()
                .change(&self.m, t, action, &request)
                .await
                .unwrap_or_else(|e| panic!("{action:?} tenant {t}: {e}"));
            self.engine()
                .wait_acknowledged(moved.change_version, Duration::from_secs(10))
                .await
                .unwrap();
            to = moved.to_phase;
        }
        to
    }

    /// One tenant one phase by `action`, guards included.
    pub async fn step_one(&self, tenant: &TenantId, action: Action) -> Phase {
        let request = Request {
            actor: "test".into(),
            reason: "test".into(),
            force: false,
            dry_run: false,
            expect_phase: None,
        };
        let moved = self
            .engine()
            .change(&self.m, tenant, action, &request)
            .await
            .unwrap_or_else(|e| panic!("{action:?} tenant {tenant}: {e}"));
        self.engine()
            .wait_acknowledged(moved.change_version, Duration::from_secs(10))
            .await
            .unwrap();
        moved.to_phase
    }

    /// Every tenant to `dual_write`, then backfilled: what the new version may then read.
    pub async fn backfill_all(&self) {
        assert_eq!(self.step_all(Action::Advance).await, Phase::DualWrite);
        let backfill = Backfill::new(
            self.pool.clone(),
            Arc::new(self.resolved().await),
            self.store.store.clone(),
        );
        for t in &self.tenants {
            let outcome = backfill.run_tenant(t).await.unwrap();
            assert!(matches!(outcome, Outcome::Complete { .. }), "{outcome:?}");
        }
    }

    /// From `dual_write` (backfilled) on to `target_only`, guards included.
    pub async fn advance_to_target_only(&self) {
        for _ in 0..3 {
            self.step_all(Action::Advance).await;
        }
    }

    /// The same database and store under a new migration with these operations (its
    /// tenants registered afresh), for tests that run migrations one after another.
    pub async fn reuse_for(&mut self, migration: &str, operations: serde_json::Value) {
        let m = MigrationId::new(migration).unwrap();
        if m == self.m {
            return;
        }
        self.plan["operations"] = operations;
        self.store
            .store
            .create_migration(&NewMigration {
                id: m.clone(),
                kind: MigrationKind::SchemaChange,
                description: String::new(),
                config: self.plan.clone(),
                created_by: "test".into(),
            })
            .await
            .unwrap();
        let sizes: Vec<TenantSize> = self
            .tenants
            .iter()
            .map(|t| TenantSize {
                tenant: t.clone(),
                rows: 40,
            })
            .collect();
        self.store.store.register_tenants(&m, &sizes).await.unwrap();
        self.m = m;
    }

    pub fn url(&self) -> &str {
        self._db.url()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A connection of one version: the old uses `app`, the new the version schema first.
    pub async fn client(&self, new_version: bool) -> sqlx::PgConnection {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(self._db.url()).await.unwrap();
        let path = if new_version {
            format!("app_{}, app", self.m)
        } else {
            "app".to_owned()
        };
        sqlx::query(AssertSqlSafe(format!("SET search_path TO {path}")))
            .execute(&mut conn)
            .await
            .unwrap();
        conn
    }
}
