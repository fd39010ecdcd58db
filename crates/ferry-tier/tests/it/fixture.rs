use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_domain::{Action, MigrationId, Phase, RouterId, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_router::{Router, RouterSettings};
use ferry_store::{MigrationKind, NewMigration, TenantSize};
use ferry_testkit::{TempDir, TestDb, TestStore};
use ferry_tier::{TieredTable, Tiering};
use sqlx::PgPool;

pub fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

/// `events`: tenants `acme` (`rows` rows, one a day back from 2026-01-01, id 1 the oldest)
/// and `other` (200 rows), a tiering migration `events_tier` over it, a router, a table.
pub struct Fixture {
    pub store: TestStore,
    pub data: TestDb,
    pub cold_dir: TempDir,
    pub pool: PgPool,
    pub migration: MigrationId,
    pub tiering: Arc<Tiering>,
    pub router: Arc<Router>,
    pub table: TieredTable,
}

/// The `at` of row `id`: day `id` after 2020-01-01, so a cutoff archives a prefix of ids.
pub fn cutoff_day(day: i64) -> String {
    (chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z").unwrap()
        + chrono::Duration::days(day))
    .to_rfc3339()
}

impl Fixture {
    pub async fn new(store: TestStore, rows: i64) -> Fixture {
        let data = TestDb::new().await;
        let pool = PgPool::connect(data.url()).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE public.events (
                 tenant_id text NOT NULL, id bigint NOT NULL, note text NOT NULL,
                 amount numeric(10,2), at timestamptz NOT NULL, PRIMARY KEY (tenant_id, id));",
        )
        .execute(&pool)
        .await
        .unwrap();
        for (t, n) in [("acme", rows), ("other", 200)] {
            sqlx::query(
                "INSERT INTO public.events SELECT $1, i, 'note ' || i, i * 0.5,
                     timestamptz '2020-01-01 00:00:00+00' + i * interval '1 day' - interval '1 hour'
                 FROM generate_series(1, $2) AS i",
            )
            .bind(t)
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
        }
        let cold_dir = TempDir::new("tier-cold");
        let migration = MigrationId::new("events_tier").unwrap();
        store
            .store
            .create_migration(&NewMigration {
                id: migration.clone(),
                kind: MigrationKind::Tiering,
                description: String::new(),
                config: serde_json::json!({
                    "table": "events", "tenant_column": "tenant_id", "age_column": "at",
                    "cold_url": format!("file://{}", cold_dir.path().display()),
                    "buffer": {"dead_after": 3},
                }),
                created_by: "test".into(),
            })
            .await
            .unwrap();
        store
            .store
            .register_tenants(
                &migration,
                &[
                    TenantSize {
                        tenant: tenant("acme"),
                        rows: rows as u64,
                    },
                    TenantSize {
                        tenant: tenant("other"),
                        rows: 200,
                    },
                ],
            )
            .await
            .unwrap();
        let tiering = Arc::new(
            Tiering::open(store.store.clone(), &migration, pool.clone())
                .await
                .unwrap(),
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
        Fixture {
            store,
            data,
            cold_dir,
            pool,
            migration,
            tiering,
            router,
            table,
        }
    }

    pub fn engine(&self) -> PhaseEngine {
        PhaseEngine::new(self.store.store.clone(), EngineSettings::default())
    }

    /// Moves the tenant one step and waits until the router has it; retries while a guard
    /// (buffer not drained) or the barrier holds it back, running `between` each time.
    pub async fn change(&self, t: &str, action: Action) -> Phase {
        let req = Request {
            actor: "test".into(),
            reason: "test".into(),
            force: false,
            dry_run: false,
            expect_phase: None,
        };
        let mut last = String::new();
        for _ in 0..300 {
            self.tiering.apply_buffer(&tenant(t)).await.ok();
            match self
                .engine()
                .change(&self.migration, &tenant(t), action, &req)
                .await
            {
                Ok(moved) => {
                    let ack = self
                        .engine()
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
        let phase = self
            .store
            .store
            .tenant(&self.migration, &tenant(t))
            .await
            .unwrap();
        let open = self
            .store
            .store
            .open_mismatches(&self.migration, &tenant(t))
            .await;
        let mut sides = Vec::new();
        for (_, key, _) in open.iter().flatten().take(1) {
            let values: Vec<String> = serde_json::from_str(key).unwrap();
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            let key = self.tiering.parse_key(&values).unwrap();
            let hot = self.tiering.hot.get(&tenant(t), &key).await;
            let cold = self.tiering.cold_get(&tenant(t), &key).await;
            sides.push(format!("{values:?}: hot {hot:?}, cold {cold:?}"));
        }
        panic!(
            "{action} of {t} from {} never went through: {last}; open mismatches: {open:?}; {sides:?}",
            phase.state.phase
        )
    }

    /// Every row of a tenant in the hot table as `id -> note`.
    pub async fn hot_rows(&self, t: &str) -> std::collections::BTreeMap<i64, String> {
        sqlx::query_as::<_, (i64, String)>(
            "SELECT id, note FROM public.events WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(t)
        .fetch_all(&self.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
    }

    pub async fn note(&self, t: &str, id: i64) -> Option<String> {
        self.table
            .get(&tenant(t), &[&id.to_string()])
            .await
            .unwrap()
            .map(|r| r["note"].as_str().unwrap().to_owned())
    }
}

pub fn note(s: &str) -> ferry_tier::Row {
    let mut r = ferry_tier::Row::new();
    r.insert("note".into(), serde_json::Value::String(s.into()));
    r
}

impl Fixture {
    /// Another application process: its own control-store connection, pool, `Tiering`
    /// (whose buffer worker may run beside this one's) and router.
    pub async fn second_process(&self) -> (Arc<Tiering>, TieredTable) {
        let pool = PgPool::connect(self.data.url()).await.unwrap();
        let tiering = Arc::new(
            Tiering::open(self.store.reopen().await, &self.migration, pool)
                .await
                .unwrap(),
        );
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
        (tiering.clone(), TieredTable::new(tiering, router))
    }

    /// Every archived row of `t` as the segments hold it: no key may be in both tiers as two
    /// different rows, and each must be what `expected` says. Returns the rows archived.
    pub async fn tiers_agree(&self, t: &str, expected: &BTreeMap<i64, Option<String>>) -> u64 {
        let hot = self.hot_rows(t).await;
        let mut archived = 0;
        for s in self
            .store
            .store
            .segments(&self.migration, &tenant(t))
            .await
            .unwrap()
        {
            archived += s.rows;
            let path = object_store::path::Path::from(s.path.as_str());
            for batch in self.tiering.cold.read(&path).await.unwrap() {
                for row in 0..batch.num_rows() {
                    let image = self.tiering.hot.normalize(&batch, row).await.unwrap();
                    let id = image["id"].as_i64().unwrap();
                    let note = image["note"].as_str().unwrap();
                    if let Some(h) = hot.get(&id) {
                        assert_eq!(h, note, "key {id} differs between the tiers");
                    }
                    assert_eq!(expected[&id].as_deref(), Some(note), "cold key {id}");
                }
            }
        }
        archived
    }
}
