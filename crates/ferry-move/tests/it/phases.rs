use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ferry_copier::{Copier, Outcome};
use ferry_domain::{Action, MigrationId, Phase, ReadPlan, RouterId, Side, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine, Request};
use ferry_move::MovedTable;
use ferry_router::{Router, RouterSettings};
use ferry_store::{CopyDirection, MigrationKind, NewMigration, TenantSize};
use ferry_testkit::{TestDb, TestStore, both_stores};
use sqlx::PgPool;
use tokio::sync::RwLock;

both_stores!(
    writers_race_every_phase_and_a_rollback,
    a_routed_delete_waits_for_a_batch_holding_the_tenant_lock,
);

const KEYS: i64 = 400;

/// What each key should read as: `None` for deleted / never inserted.
type Expected = BTreeMap<i64, Option<String>>;

fn req() -> Request {
    Request {
        actor: "test".into(),
        reason: "test".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    }
}

async fn change(engine: &PhaseEngine, m: &MigrationId, t: &TenantId, action: Action) -> Phase {
    for _ in 0..500 {
        match engine.change(m, t, action, &req()).await {
            Ok(moved) => {
                let ack = engine
                    .wait_acknowledged(moved.change_version, Duration::from_secs(20))
                    .await
                    .unwrap();
                assert!(ack.effective());
                return moved.to_phase;
            }
            Err(e) if e.to_string().contains("have not acknowledged") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{action}: {e}"),
        }
    }
    panic!("{action}: routers never caught up")
}

async fn side_rows(pool: &PgPool, schema: &str, tenant: &str) -> BTreeMap<i64, String> {
    let sql = format!("SELECT id, note FROM {schema}.orders WHERE tenant_id = $1 ORDER BY id");
    sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// With the writers held, every key reads as expected through the table, and the side the
/// phase reads from holds exactly the expected rows.
async fn check(table: &MovedTable, pool: &PgPool, expected: &Expected, phase: Phase, when: &str) {
    let t1 = TenantId::new("t1").unwrap();
    for (id, want) in expected {
        let got = table.get(&t1, &[&id.to_string()]).await.unwrap();
        let got = got.map(|r| r["note"].as_str().unwrap_or_default().to_owned());
        assert_eq!(&got, want, "{when} ({phase}): key {id}");
    }
    let schema = match ReadPlan::for_phase(phase).serve {
        Side::Source => "public",
        Side::Target => "moved",
    };
    let rows = side_rows(pool, schema, "t1").await;
    let want: BTreeMap<i64, String> = expected
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
        .collect();
    assert_eq!(
        rows, want,
        "{when} ({phase}): {schema}.orders holds exactly the acknowledged writes"
    );
}

/// Rows of t1 in the target that the source does not hold identically.
async fn stale_target_rows(pool: &PgPool) -> u64 {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM moved.orders m
         WHERE m.tenant_id = 't1' AND NOT EXISTS (
             SELECT 1 FROM public.orders p
             WHERE p.tenant_id = m.tenant_id AND p.id = m.id AND p.note = m.note AND p.version = m.version)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    n as u64
}

/// Two tenants of 300 rows in `public.orders`, the migration to `moved.orders`, and the
/// copier and two application processes over them (each a router and the table), so writes
/// and reads race across routers one phase apart while a change is acknowledged.
struct Setup {
    _data: TestDb,
    pool: PgPool,
    m: MigrationId,
    t1: TenantId,
    t2: TenantId,
    engine: PhaseEngine,
    copier: Copier,
    routers: [Arc<Router>; 2],
    table: Arc<MovedTable>,
    table2: Arc<MovedTable>,
}

async fn setup(s: &TestStore) -> Setup {
    let data = TestDb::new().await;
    let pool = ferry_copier::connect(data.url(), "connect").await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE public.orders (
             tenant_id text NOT NULL, id bigint NOT NULL, note text NOT NULL,
             version bigint NOT NULL DEFAULT 1, PRIMARY KEY (tenant_id, id));
         INSERT INTO public.orders (tenant_id, id, note)
         SELECT t, i, t || '-' || i FROM unnest(ARRAY['t1', 't2']) t, generate_series(1, 300) i;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let m = MigrationId::new("orders_move").unwrap();
    s.store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::TenantMove,
            description: String::new(),
            config: serde_json::json!({
                "source": {"schema": "public", "table": "orders"},
                "target": {"schema": "moved", "table": "orders"},
                "tenant_column": "tenant_id", "version_column": "version",
                "copy": {"min_batch": 20, "max_batch": 100, "start_batch": 30, "target_batch_ms": 20}
            }),
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let t1 = TenantId::new("t1").unwrap();
    let t2 = TenantId::new("t2").unwrap();
    s.store
        .register_tenants(
            &m,
            &[
                TenantSize {
                    tenant: t1.clone(),
                    rows: 300,
                },
                TenantSize {
                    tenant: t2.clone(),
                    rows: 300,
                },
            ],
        )
        .await
        .unwrap();
    let engine = PhaseEngine::new(s.store.clone(), EngineSettings::default());
    let copier = Copier::open(
        s.store.clone(),
        PhaseEngine::new(s.store.clone(), EngineSettings::default()),
        &m,
        pool.clone(),
        pool.clone(),
        true,
    )
    .await
    .unwrap();
    let mut routers = Vec::new();
    let mut tables = Vec::new();
    for id in ["app", "app-2"] {
        let router = Arc::new(
            Router::start(
                s.reopen().await,
                RouterSettings {
                    heartbeat: Duration::from_millis(50),
                    ..RouterSettings::new(RouterId::new(id).unwrap(), "test")
                },
            )
            .await
            .unwrap(),
        );
        let table = MovedTable::open(
            router.clone(),
            s.store.clone(),
            &m,
            pool.clone(),
            pool.clone(),
        );
        tables.push(Arc::new(table.await.unwrap()));
        routers.push(router);
    }
    let (table2, table) = (tables.pop().unwrap(), tables.pop().unwrap());
    let routers: [Arc<Router>; 2] = routers.try_into().unwrap_or_else(|_| unreachable!());
    Setup {
        _data: data,
        pool,
        m,
        t1,
        t2,
        engine,
        copier,
        routers,
        table,
        table2,
    }
}

async fn writers_race_every_phase_and_a_rollback(s: &TestStore) {
    let Setup {
        _data,
        pool,
        m,
        t1,
        t2: _,
        engine,
        copier,
        routers: _routers,
        table,
        table2,
    } = setup(s).await;
    let t2_before = side_rows(&pool, "public", "t2").await;

    // Each writer owns the keys with its parity, so "the last acknowledged write" per key is
    // well defined; `hold` lets the checker quiesce them.
    let mut expected: Expected = (1..=KEYS)
        .map(|k| (k, (k <= 300).then(|| format!("t1-{k}"))))
        .collect();
    let hold = Arc::new(RwLock::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut states: Vec<Arc<std::sync::Mutex<Expected>>> = Vec::new();
    for w in 0..2i64 {
        let mine: Expected = expected
            .iter()
            .filter(|(k, _)| *k % 2 == w)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let shared = Arc::new(std::sync::Mutex::new(mine.clone()));
        states.push(shared.clone());
        // Writer w writes through process w and reads its writes back through the other.
        let (mut table, mut other) = (table.clone(), table2.clone());
        if w == 1 {
            std::mem::swap(&mut table, &mut other);
        }
        let (hold, stop, ops, t1) = (hold.clone(), stop.clone(), ops.clone(), t1.clone());
        writers.push(tokio::spawn(async move {
            let mut mine = mine;
            let mut x = 0x2545_f491_u64 + w as u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _held = hold.read().await;
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let id = ((x % (KEYS as u64 / 2)) as i64) * 2 + w + if w == 0 { 2 } else { 0 };
                let id = id.clamp(1, KEYS);
                if id % 2 != w {
                    continue;
                }
                n += 1;
                let key = id.to_string();
                let note = format!("w{w}-op{n}");
                let now = match mine.get(&id).cloned().flatten() {
                    None => {
                        let mut row = ferry_move::Row::new();
                        row.insert("id".into(), serde_json::json!(id));
                        row.insert("note".into(), serde_json::json!(note));
                        table.insert(&t1, row).await.unwrap();
                        Some(note)
                    }
                    Some(_) if x.is_multiple_of(4) => {
                        assert!(table.delete(&t1, &[&key]).await.unwrap());
                        None
                    }
                    Some(_) => {
                        let mut row = ferry_move::Row::new();
                        row.insert("note".into(), serde_json::json!(note));
                        assert!(table.update(&t1, &[&key], row).await.unwrap().is_some());
                        Some(note)
                    }
                };
                // Read your own acknowledged write through the other router, in whatever
                // phase each of them routes by.
                let read = other
                    .get(&t1, &[&key])
                    .await
                    .unwrap()
                    .map(|r| r["note"].as_str().unwrap().to_owned());
                assert_eq!(read, now, "key {id} right after writing it");
                mine.insert(id, now.clone());
                shared.lock().unwrap().insert(id, now);
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let merged = |states: &[Arc<std::sync::Mutex<Expected>>]| -> Expected {
        let mut all = Expected::new();
        for state in states {
            all.extend(state.lock().unwrap().iter().map(|(k, v)| (*k, v.clone())));
        }
        all
    };

    // The phases, with the copier running while the writers write, and a rollback from
    // target_primary all the way to legacy and back.
    let steps = [
        Action::Advance,  // dual_write (then copy)
        Action::Advance,  // shadow
        Action::Advance,  // target_primary
        Action::Rollback, // shadow
        Action::Rollback, // legacy
        Action::Advance,  // dual_write (copy again)
        Action::Advance,  // shadow
        Action::Advance,  // target_primary
        Action::Advance,  // target_only
        Action::Advance,  // complete
    ];
    // Shadow reads compare the sides. The one moment they may differ is a rollback to
    // legacy: the router already in legacy writes the source alone while the other, still in
    // shadow until it acknowledges, compares (the target is stale from then on and copied
    // again on the next advance). Anywhere else a difference is a lost or misrouted write.
    let shadow_differences = || {
        table.stats.shadow_mismatches.load(Ordering::Relaxed)
            + table2.stats.shadow_mismatches.load(Ordering::Relaxed)
    };
    let mut phase = Phase::Legacy;
    for action in steps {
        let differences_before = shadow_differences();
        phase = change(&engine, &m, &t1, action).await;
        let while_moving = shadow_differences() - differences_before;
        if phase != Phase::Legacy {
            assert_eq!(
                while_moving, 0,
                "shadow reads differed while the routers moved to {phase}"
            );
        }
        if phase == Phase::DualWrite {
            // What an earlier epoch left in the target that the source no longer holds as is
            // (rows deleted or changed during legacy): the only rows a copy may repair. Races
            // with the writers, which the tenant lock closes, must not add any.
            let quiet = hold.write().await;
            let leftovers = stale_target_rows(&pool).await;
            drop(quiet);
            let outcome = copier
                .copy(&t1, CopyDirection::Forward, |_| {})
                .await
                .unwrap();
            let Outcome::Complete {
                repaired,
                mismatches,
                ..
            } = outcome
            else {
                panic!("{outcome:?}");
            };
            let open = s.store.open_mismatches(&m, &t1).await.unwrap();
            assert_eq!(mismatches, 0, "{outcome:?} after {action}: {open:?}");
            assert!(
                repaired <= leftovers,
                "{repaired} repairs, but only {leftovers} rows were stale before the copy: a race was repaired away"
            );
        }
        // Let the writers work in this phase before checking: a few operations more.
        let before = ops.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while ops.load(Ordering::Relaxed) < before + 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "the writers stalled in {phase}"
            );
            tokio::task::yield_now().await;
        }
        // Quiesce the writers (in-flight operations finish) and check every key.
        let quiet = hold.write().await;
        assert_eq!(
            shadow_differences() - differences_before - while_moving,
            0,
            "shadow reads differed with both routers in {phase}"
        );
        check(
            &table,
            &pool,
            &merged(&states),
            phase,
            &format!("after {action}"),
        )
        .await;
        drop(quiet);
    }
    assert_eq!(phase, Phase::Complete);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    expected = merged(&states);
    let n = ops.load(Ordering::Relaxed);
    assert!(n > 300, "only {n} writes raced the phases");
    check(&table, &pool, &expected, phase, "at the end").await;
    let buffered = s.store.open_updates(&m).await.unwrap();
    let parked = [&table, &table2].map(|t| t.stats.buffered.load(Ordering::Relaxed));
    assert_eq!(parked, [0, 0], "{buffered:?}");

    // Retire the source: t1 is gone from it, t2 is untouched everywhere.
    copier.retire_source(&t1, |_| {}).await.unwrap();
    assert!(side_rows(&pool, "public", "t1").await.is_empty());
    assert_eq!(side_rows(&pool, "public", "t2").await, t2_before);
    assert!(side_rows(&pool, "moved", "t2").await.is_empty());
    check(&table, &pool, &expected, phase, "after retiring the source").await;
}

/// The router's half of the tenant lock: while a copy may read the source (dual_write), a
/// delete through the table waits for a batch holding the lock, then completes; a tenant in
/// legacy (no copy) deletes without waiting.
async fn a_routed_delete_waits_for_a_batch_holding_the_tenant_lock(s: &TestStore) {
    let set = setup(s).await;
    change(&set.engine, &set.m, &set.t1, Action::Advance).await;
    let mut batch = set.pool.begin().await.unwrap();
    for t in [&set.t1, &set.t2] {
        ferry_copier::tenant_lock::take(&mut batch, &set.m, t, true)
            .await
            .unwrap();
    }
    let deleting = {
        let (table, t1) = (set.table.clone(), set.t1.clone());
        tokio::spawn(async move { table.delete(&t1, &["7"]).await })
    };
    // t2 is in legacy: nothing copies it, its delete does not wait.
    assert!(set.table.delete(&set.t2, &["7"]).await.unwrap());
    // The delete waits for the lock (a lock request of the data database not granted).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT exists (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                            WHERE NOT l.granted AND a.datname = current_database())",
        )
        .fetch_one(&set.pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(
            !deleting.is_finished() && std::time::Instant::now() < deadline,
            "a dual_write delete waits for the batch holding the tenant lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!deleting.is_finished());
    assert!(side_rows(&set.pool, "public", "t1").await.contains_key(&7));
    batch.commit().await.unwrap();
    assert!(deleting.await.unwrap().unwrap());
    assert!(!side_rows(&set.pool, "public", "t1").await.contains_key(&7));
    assert!(!side_rows(&set.pool, "public", "t2").await.contains_key(&7));
}
