use std::sync::Arc;

use ferry_copier::Copier;
use ferry_domain::{Action, MigrationId, Phase, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_store::{MigrationKind, NewMigration, TenantSize};
use ferry_testkit::{TestDb, TestStore};
use sqlx::PgPool;

pub struct Fixture {
    pub store: TestStore,
    /// Dropped with the fixture: the data database lives as long as the test.
    _data: TestDb,
    pub pool: PgPool,
    pub migration: MigrationId,
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

pub fn req() -> Request {
    Request {
        actor: "test".into(),
        reason: "test".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    }
}

pub const TABLE: &str = "
CREATE TABLE public.orders (
    tenant_id text NOT NULL,
    id bigint NOT NULL,
    amount numeric(12,2) NOT NULL,
    note text,
    tags jsonb,
    blob bytea,
    ratio float8,
    placed_at timestamptz NOT NULL DEFAULT now(),
    version bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (tenant_id, id)
)";

/// Rows with every kind of value, NULLs included.
pub async fn fill(pool: &PgPool, tenant: &str, rows: i64) {
    sqlx::query(
        "INSERT INTO public.orders (tenant_id, id, amount, note, tags, blob, ratio, placed_at)
         SELECT $1, i, (i * 1.25)::numeric(12,2),
                CASE WHEN i % 7 = 0 THEN NULL ELSE 'note ' || i || ' ✓' END,
                jsonb_build_object('i', i, 'even', i % 2 = 0),
                CASE WHEN i % 5 = 0 THEN NULL ELSE decode(md5(i::text), 'hex') END,
                i / 3.0, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute'
         FROM generate_series(1, $2) AS i",
    )
    .bind(tenant)
    .bind(rows)
    .execute(pool)
    .await
    .unwrap();
}

impl Fixture {
    /// `orders` with the given tenants and row counts, and a migration `orders_move` to
    /// `moved.orders` (created by the copier), with small batches so copies take many.
    pub async fn new(
        store: TestStore,
        tenants: &[(&str, i64)],
        extra: serde_json::Value,
    ) -> Fixture {
        Fixture::on(TestDb::new().await, store, tenants, extra).await
    }

    /// [`Fixture::new`] with the data in a given database (on a test's own server).
    pub async fn on(
        data: TestDb,
        store: TestStore,
        tenants: &[(&str, i64)],
        extra: serde_json::Value,
    ) -> Fixture {
        let pool = ferry_copier::connect(data.url(), "connect").await.unwrap();
        sqlx::raw_sql(TABLE).execute(&pool).await.unwrap();
        for (t, n) in tenants {
            fill(&pool, t, *n).await;
        }
        let migration = MigrationId::new("orders_move").unwrap();
        let mut config = serde_json::json!({
            "source": {"schema": "public", "table": "orders"},
            "target": {"schema": "moved", "table": "orders"},
            "tenant_column": "tenant_id",
            "version_column": "version",
            "copy": {"min_batch": 20, "max_batch": 200, "start_batch": 50, "target_batch_ms": 50},
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        store
            .store
            .create_migration(&NewMigration {
                id: migration.clone(),
                kind: MigrationKind::TenantMove,
                description: String::new(),
                config,
                created_by: "test".into(),
            })
            .await
            .unwrap();
        let sizes: Vec<TenantSize> = tenants
            .iter()
            .map(|(t, n)| TenantSize {
                tenant: tenant(t),
                rows: *n as u64,
            })
            .collect();
        store
            .store
            .register_tenants(&migration, &sizes)
            .await
            .unwrap();
        Fixture {
            store,
            _data: data,
            pool,
            migration,
        }
    }

    pub fn engine(&self) -> PhaseEngine {
        PhaseEngine::new(self.store.store.clone(), EngineSettings::default())
    }

    pub async fn copier(&self) -> Copier {
        Copier::open(
            self.store.store.clone(),
            self.engine(),
            &self.migration,
            self.pool.clone(),
            self.pool.clone(),
            true,
        )
        .await
        .unwrap()
    }

    pub async fn change(&self, t: &str, action: Action) -> Phase {
        self.engine()
            .change(&self.migration, &tenant(t), action, &req())
            .await
            .unwrap()
            .to_phase
    }

    /// A digest of a tenant's rows on one side (`public` or `moved`), in key order.
    pub async fn digest(&self, schema: &str, t: &str) -> (i64, String) {
        let sql = format!(
            "SELECT count(*), coalesce(md5(string_agg(o::text, '|' ORDER BY id)), '') FROM {schema}.orders o WHERE tenant_id = $1"
        );
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(t)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub fn store(&self) -> &Arc<dyn ferry_store::ControlStore> {
        &self.store.store
    }
}
