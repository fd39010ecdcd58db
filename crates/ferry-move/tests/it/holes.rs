//! Holes a review found in the tenant move's write path, each reproduced against a real
//! PostgreSQL, then closed. Every test is named after the hole it closes.

use std::sync::Arc;
use std::time::Duration;

use ferry_domain::{Action, MigrationId, Phase, RouterId, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_move::{MovedTable, Row};
use ferry_router::{Router, RouterSettings};
use ferry_store::{MigrationKind, NewMigration, TenantSize};
use ferry_testkit::{TestDb, TestStore};
use sqlx::PgPool;

/// `public.orders` (source) and `moved.orders` (target) in one database, tenant `t1` with
/// rows 1..=10 on both sides, a router and the table over them.
struct Fixture {
    _data: TestDb,
    store: TestStore,
    pool: PgPool,
    m: MigrationId,
    t1: TenantId,
    router: Arc<Router>,
    table: MovedTable,
}

async fn fixture() -> Fixture {
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
        _data: data,
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
    async fn enter(&self, phase: Phase) {
        let engine = PhaseEngine::new(self.store.store.clone(), EngineSettings::default());
        let request = Request {
            actor: "test".into(),
            reason: "test".into(),
            force: true,
            dry_run: false,
            expect_phase: None,
        };
        let mut now = self
            .store
            .store
            .tenant(&self.m, &self.t1)
            .await
            .unwrap()
            .state
            .phase;
        while now != phase {
            let moved = engine
                .change(&self.m, &self.t1, Action::Advance, &request)
                .await
                .unwrap();
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

    async fn note(&self, schema: &str, id: i64) -> Option<Option<String>> {
        let sql = format!("SELECT note FROM {schema}.orders WHERE tenant_id = 't1' AND id = $1");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .unwrap()
    }

    /// A trigger on `schema.orders` that fails the COMMIT of any transaction writing a row
    /// whose note is `fail-at-commit`: a deferred constraint, as real schemas have.
    async fn fail_commits_on(&self, schema: &str) {
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

fn row(id: Option<i64>, note: &str) -> Row {
    let mut row = Row::new();
    if let Some(id) = id {
        row.insert("id".into(), serde_json::json!(id));
    }
    row.insert("note".into(), serde_json::json!(note));
    row
}

/// Item 9 of the review: the non-authoritative side committed before the authoritative
/// COMMIT, so when that COMMIT failed (a deferred constraint here; a lost connection in
/// production) the request failed and the write lived on the other side only. In each phase
/// with two sides, a write whose authoritative commit fails must leave both sides as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_never_lands_on_the_non_authoritative_side_only() {
    let f = fixture().await;
    for (phase, authoritative, other) in [
        (Phase::DualWrite, "public", "moved"),
        (Phase::TargetPrimary, "moved", "public"),
    ] {
        f.enter(phase).await;
        f.fail_commits_on(authoritative).await;
        let id = if phase == Phase::DualWrite { 100 } else { 200 };

        let inserted = f.table.insert(&f.t1, row(Some(id), "fail-at-commit")).await;
        assert!(
            inserted.is_err(),
            "{phase}: the insert's commit was refused"
        );
        assert_eq!(f.note(authoritative, id).await, None, "{phase}: insert");
        assert_eq!(
            f.note(other, id).await,
            None,
            "{phase}: insert left on {other} only"
        );

        let updated = f
            .table
            .update(&f.t1, &["3"], row(None, "fail-at-commit"))
            .await;
        assert!(updated.is_err(), "{phase}: the update's commit was refused");
        assert_eq!(
            f.note(authoritative, 3).await,
            Some(Some("n3".into())),
            "{phase}"
        );
        assert_eq!(
            f.note(other, 3).await,
            Some(Some("n3".into())),
            "{phase}: update left on {other} only"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP TRIGGER refuse ON {authoritative}.orders; DROP FUNCTION {authoritative}.refuse()"
        )))
        .execute(&f.pool)
        .await
        .unwrap();
    }
    // Nothing was parked for either: there was nothing to catch up.
    assert_eq!(
        f.store
            .store
            .pending_updates(&f.m, &f.t1)
            .await
            .unwrap()
            .len(),
        0
    );
}

/// Item 2 of the review: with a nullable version column (common after `ADD COLUMN version
/// bigint`), `target.version < excluded.version` is never true for a NULL, so the mirror's
/// upsert wrote nothing and that passed for success. Such a column is refused at open, naming
/// it and saying how to make it NOT NULL without a long lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_version_cannot_disable_the_version_guard() {
    let f = fixture().await;
    sqlx::raw_sql(
        "ALTER TABLE public.orders ALTER COLUMN version DROP NOT NULL;
         ALTER TABLE moved.orders ALTER COLUMN version DROP NOT NULL;",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    let refused = MovedTable::open(
        f.router.clone(),
        f.store.store.clone(),
        &f.m,
        f.pool.clone(),
        f.pool.clone(),
    )
    .await;
    let err = match refused {
        Ok(_) => panic!("a nullable version column was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("version column version of public.orders allows NULL")
            && err.contains("SET NOT NULL"),
        "{err}"
    );
}

/// Item 2 of the review, its second half: a mirror whose version-guarded upsert changed
/// nothing passed for success even when the other side held a newer version than the
/// authoritative write (a write that bypassed the router, clocks apart): the sides then
/// differed silently. It is recorded as a mismatch, which holds the next phase change; a
/// repeat of the same version is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_skipped_by_a_newer_version_is_a_recorded_divergence() {
    let f = fixture().await;
    f.enter(Phase::DualWrite).await;
    sqlx::raw_sql(
        "UPDATE moved.orders SET note = 'ahead', version = 9000000000000000000
         WHERE tenant_id = 't1' AND id = 4",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    let written = f
        .table
        .update(&f.t1, &["4"], row(None, "authoritative"))
        .await;
    assert!(written.unwrap().is_some(), "the authoritative write stands");
    let open = f.store.store.open_mismatches(&f.m, &f.t1).await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert!(
        open[0].2.contains("target holds a newer version"),
        "{open:?}"
    );
    // An ordinary write whose mirror lands records nothing.
    f.table
        .update(&f.t1, &["5"], row(None, "fine"))
        .await
        .unwrap();
    assert_eq!(
        f.store
            .store
            .open_mismatches(&f.m, &f.t1)
            .await
            .unwrap()
            .len(),
        1
    );
}
