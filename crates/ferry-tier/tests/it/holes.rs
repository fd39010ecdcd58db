//! Holes a review found in tiering's data paths, each reproduced against a real PostgreSQL,
//! then closed. Every test is named after the hole it closes.

use std::time::{Duration, Instant};

use ferry_domain::{Action, Phase};
use ferry_testkit::{TestStore, both_stores};

use crate::fixture::{Fixture, cutoff_day, tenant};

both_stores!(
    hot_copy_deletion_stops_when_the_tenant_leaves_target_only,
    shadow_differences_are_recorded_and_block_the_flip,
    an_archived_row_update_the_table_would_refuse_is_refused,
    a_failed_hot_copy_write_holds_the_rollback_until_repaired,
);

/// Waits until some backend waits for an advisory lock in the hot database.
async fn until_a_lock_is_awaited(pool: &sqlx::PgPool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT exists (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted)",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing ever waited for the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Item 5 of the review, tiering's half: `ferry tier run` read the phase once per pass, so a
/// pass deleting hot copies in `target_only` went on deleting after the tenant stepped back
/// to `target_primary`, whose reads fall back to those copies. A deletion batch now runs only
/// while the tenant is still in the `target_only` epoch the pass started in.
async fn hot_copy_deletion_stops_when_the_tenant_leaves_target_only(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    let t = tenant("acme");
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert!(f.tiering.archive(&t, &cutoff_day(200)).await.unwrap().rows >= 190);
    for phase in [Phase::Shadow, Phase::TargetPrimary, Phase::TargetOnly] {
        assert_eq!(f.change("acme", Action::Advance).await, phase);
    }
    let hot_before = f.hot_rows("acme").await;
    // The deletion's first batch waits for the tenant lock a writer holds…
    let writer = f.tiering.lock_tenant(&t, false).await.unwrap();
    let deleting = {
        let (tiering, t) = (f.tiering.clone(), t.clone());
        tokio::spawn(async move { tiering.delete_hot_copies(&t, 20).await })
    };
    until_a_lock_is_awaited(&f.pool).await;
    // …while the tenant steps back to target_primary.
    assert_eq!(
        f.change("acme", Action::Rollback).await,
        Phase::TargetPrimary
    );
    writer.commit().await.unwrap();
    let deleted = deleting.await.unwrap().unwrap();
    assert_eq!(deleted, 0, "no hot copy deleted after the step back");
    assert_eq!(f.hot_rows("acme").await, hot_before);
}

/// Lock requests waiting in sessions of the given databases (by name). By session, not by
/// the lock's own database: a wait for another transaction names no database.
async fn waiting_in(pool: &sqlx::PgPool, databases: &[String]) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE NOT l.granted AND a.datname = ANY($1)",
    )
    .bind(databases)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn until_waiting(pool: &sqlx::PgPool, databases: &[String], n: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while waiting_in(pool, databases).await < n {
        assert!(Instant::now() < deadline, "never {n} waiting");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn database_name(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A tenant in `target_only` with rows 1..~199 archived, a PostgreSQL control store, and a
/// way to hold every enqueue into the update buffer: a writer that reached its enqueue
/// waits there, having already built its image.
struct HeldBuffer {
    f: Fixture,
    store_pool: sqlx::PgPool,
    databases: Vec<String>,
}

async fn held_buffer() -> HeldBuffer {
    let store = TestStore::postgres().await;
    let store_pool = sqlx::PgPool::connect(&store.url).await.unwrap();
    let f = Fixture::new(store, 300).await;
    let t = tenant("acme");
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert!(f.tiering.archive(&t, &cutoff_day(200)).await.unwrap().rows >= 190);
    for phase in [Phase::Shadow, Phase::TargetPrimary, Phase::TargetOnly] {
        assert_eq!(f.change("acme", Action::Advance).await, phase);
    }
    let databases = vec![
        database_name(&store_pool).await,
        database_name(&f.pool).await,
    ];
    HeldBuffer {
        f,
        store_pool,
        databases,
    }
}

impl HeldBuffer {
    async fn hold(&self) -> sqlx::Transaction<'static, sqlx::Postgres> {
        let mut tx = self.store_pool.begin().await.unwrap();
        sqlx::query("LOCK TABLE ferry.ferry_update_buffer IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx
    }
}

fn change(column: &str, value: serde_json::Value) -> ferry_tier::Row {
    let mut row = ferry_tier::Row::new();
    row.insert(column.into(), value);
    row
}

/// Item 1 of the review: in `target_only` two writers of one archived key, on different
/// columns, each built the new image from the cold image read under the shared tenant lock
/// only; the later enqueue wiped the earlier change. Writer A is held at its enqueue, writer
/// B then runs: B must build on A's change, not beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_an_archived_key_keep_both_changes() {
    let h = held_buffer().await;
    let held = h.hold().await;
    let f = std::sync::Arc::new(h.f);
    let t = tenant("acme");
    let a = {
        let (f, t) = (f.clone(), t.clone());
        tokio::spawn(async move {
            f.table
                .update(&t, &["5"], change("note", "from A".into()))
                .await
        })
    };
    until_waiting(&h.store_pool, &h.databases, 1).await;
    let b = {
        let (f, t) = (f.clone(), t.clone());
        tokio::spawn(async move {
            f.table
                .update(&t, &["5"], change("amount", serde_json::json!("9.75")))
                .await
        })
    };
    until_waiting(&h.store_pool, &h.databases, 2).await;
    held.commit().await.unwrap();
    a.await.unwrap().unwrap().expect("row 5 exists");
    b.await.unwrap().unwrap().expect("row 5 exists");
    f.tiering.apply_buffer(&t).await.unwrap();
    let row = f.table.get(&t, &["5"]).await.unwrap().unwrap();
    assert_eq!(row["note"], "from A", "A's change survived B's: {row:?}");
    assert_eq!(row["amount"].to_string(), "9.75", "{row:?}");
}

/// Item 1 of the review, a delete racing an update: the update's image (built before the
/// delete was enqueued) brought the row back after the delete had returned true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_archived_row_stays_deleted_when_an_update_races_it() {
    let h = held_buffer().await;
    let held = h.hold().await;
    let f = std::sync::Arc::new(h.f);
    let t = tenant("acme");
    let deleting = {
        let (f, t) = (f.clone(), t.clone());
        tokio::spawn(async move { f.table.delete(&t, &["7"]).await })
    };
    until_waiting(&h.store_pool, &h.databases, 1).await;
    let updating = {
        let (f, t) = (f.clone(), t.clone());
        tokio::spawn(async move {
            f.table
                .update(&t, &["7"], change("note", "too late".into()))
                .await
        })
    };
    until_waiting(&h.store_pool, &h.databases, 2).await;
    held.commit().await.unwrap();
    assert!(deleting.await.unwrap().unwrap(), "the delete found the row");
    assert_eq!(
        updating.await.unwrap().unwrap(),
        None,
        "the update comes after the delete: no row to update"
    );
    f.tiering.apply_buffer(&t).await.unwrap();
    assert_eq!(
        f.table.get(&t, &["7"]).await.unwrap(),
        None,
        "row 7 stays deleted"
    );
}

/// Item 1 of the review, its last sentence: a shadow read that found hot and cold different
/// only counted it, so nothing held the tenant back from `target_primary`, where the cold
/// image answers. The difference is recorded; the authority flip waits for it; a `tier run`
/// pass re-checks the key, repairs the cold tier from hot, and resolves it.
async fn shadow_differences_are_recorded_and_block_the_flip(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    let t = tenant("acme");
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert!(f.tiering.archive(&t, &cutoff_day(200)).await.unwrap().rows >= 190);
    assert_eq!(f.change("acme", Action::Advance).await, Phase::Shadow);
    // The hot row changes behind the tiers' back (a write that bypassed the router).
    sqlx::query(
        "UPDATE public.events SET note = 'behind the back' WHERE tenant_id = 'acme' AND id = 9",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    // Read three times: recorded once (each read recorded a row of its own before).
    for _ in 0..3 {
        assert_eq!(f.note("acme", 9).await.as_deref(), Some("behind the back"));
    }
    let open = f
        .store
        .store
        .open_mismatches(&f.migration, &t)
        .await
        .unwrap();
    assert_eq!(open.len(), 1, "the shadow reads recorded it once: {open:?}");
    let refused = f
        .engine()
        .change(&f.migration, &t, Action::Advance, &request())
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("unresolved validation mismatch"),
        "{refused}"
    );
    // A pass repairs the cold tier from hot (shadow: hot is authoritative), the next resolves.
    let first = f
        .tiering
        .recheck_mismatches(&t, Phase::Shadow)
        .await
        .unwrap();
    assert_eq!((first.resolved, first.repaired), (0, 1));
    f.tiering.apply_buffer(&t).await.unwrap();
    let second = f
        .tiering
        .recheck_mismatches(&t, Phase::Shadow)
        .await
        .unwrap();
    assert_eq!((second.resolved, second.repaired), (1, 0));
    assert_eq!(
        f.change("acme", Action::Advance).await,
        Phase::TargetPrimary
    );
    assert_eq!(f.note("acme", 9).await.as_deref(), Some("behind the back"));
}

fn request() -> ferry_engine::Request {
    ferry_engine::Request {
        actor: "test".into(),
        reason: "test".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    }
}

/// Item 8 of the review: an update of an archived row was checked by `json_populate_record`
/// alone, which enforces neither CHECK nor NOT NULL, so a row the table would refuse was
/// acknowledged and archived. The table's constraints now judge the new image first.
async fn an_archived_row_update_the_table_would_refuse_is_refused(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    let t = tenant("acme");
    sqlx::query("ALTER TABLE public.events ADD CONSTRAINT amount_not_negative CHECK (amount >= 0)")
        .execute(&f.pool)
        .await
        .unwrap();
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert!(f.tiering.archive(&t, &cutoff_day(200)).await.unwrap().rows >= 190);
    for phase in [Phase::Shadow, Phase::TargetPrimary, Phase::TargetOnly] {
        assert_eq!(f.change("acme", Action::Advance).await, phase);
    }
    f.tiering.delete_hot_copies(&t, 50).await.unwrap();
    let before = f.table.get(&t, &["12"]).await.unwrap().unwrap();
    for (column, value, constraint) in [
        ("amount", serde_json::json!("-5"), "amount_not_negative"),
        (
            "note",
            serde_json::Value::Null,
            "null value in column \"note\"",
        ),
    ] {
        let err = f
            .table
            .update(&t, &["12"], change(column, value))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ferry_tier::TableError::Rejected { .. })
                && err.to_string().contains(constraint),
            "{err}"
        );
    }
    assert_eq!(f.table.get(&t, &["12"]).await.unwrap().unwrap(), before);
    assert!(
        f.store
            .store
            .pending_updates(&f.migration, &t)
            .await
            .unwrap()
            .is_empty(),
        "nothing was buffered"
    );
}

/// Item 8 of the review: in `target_primary` a failed write of the hot copy was only logged;
/// a rollback to `shadow` then made the stale hot copy authoritative and the acknowledged
/// update was lost. The failure is recorded as a mismatch, which holds that rollback until a
/// `tier run` pass has repaired the copy.
async fn a_failed_hot_copy_write_holds_the_rollback_until_repaired(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    let t = tenant("acme");
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert!(f.tiering.archive(&t, &cutoff_day(200)).await.unwrap().rows >= 190);
    for phase in [Phase::Shadow, Phase::TargetPrimary] {
        assert_eq!(f.change("acme", Action::Advance).await, phase);
    }
    // The first write of a 'poison' row passes (the constraint check: an upsert, which fires
    // the trigger for its insert and then its update), later ones fail (the hot copy's write).
    sqlx::raw_sql(
        "CREATE SEQUENCE poison_seq;
         CREATE FUNCTION refuse_every_second() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.note = 'poison' AND nextval('poison_seq') > 2 THEN
                 RAISE EXCEPTION 'the hot copy cannot be written now';
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_every_second BEFORE INSERT OR UPDATE ON public.events
             FOR EACH ROW EXECUTE FUNCTION refuse_every_second();",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    let written = f
        .table
        .update(&t, &["11"], change("note", "poison".into()))
        .await
        .unwrap();
    assert_eq!(
        written.unwrap()["note"],
        "poison",
        "acknowledged: the buffer has it"
    );
    let open = f
        .store
        .store
        .open_mismatches(&f.migration, &t)
        .await
        .unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    f.tiering.apply_buffer(&t).await.unwrap();
    let refused = f
        .engine()
        .change(&f.migration, &t, Action::Rollback, &request())
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("unresolved validation mismatch"),
        "{refused}"
    );
    sqlx::raw_sql("DROP TRIGGER refuse_every_second ON public.events")
        .execute(&f.pool)
        .await
        .unwrap();
    let first = f
        .tiering
        .recheck_mismatches(&t, Phase::TargetPrimary)
        .await
        .unwrap();
    assert_eq!((first.resolved, first.repaired), (0, 1));
    let second = f
        .tiering
        .recheck_mismatches(&t, Phase::TargetPrimary)
        .await
        .unwrap();
    assert_eq!((second.resolved, second.repaired), (1, 0));
    assert_eq!(f.change("acme", Action::Rollback).await, Phase::Shadow);
    assert_eq!(
        f.note("acme", 11).await.as_deref(),
        Some("poison"),
        "the update survived"
    );
}

/// Item 11 of the review: garbage collection deleted the object of a reservation older than
/// its staleness limit (a long archive still working), and the archive then committed it: a
/// live segment without its object. The collector now claims each reservation in the manifest
/// before deleting its object; one committed meanwhile is live, not claimable, and kept. The
/// archive's commit is held on the segment's row while the collector runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_never_deletes_a_segment_an_archive_commits_meanwhile() {
    let store = TestStore::postgres().await;
    let store_pool = sqlx::PgPool::connect(&store.url).await.unwrap();
    let f = Fixture::new(store, 300).await;
    let t = tenant("acme");
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert!(f.tiering.archive(&t, &cutoff_day(200)).await.unwrap().rows >= 190);
    let before = f.note("acme", 5).await;
    // The segment as a long archive would hold it just before its commit: a reservation,
    // its object uploaded, older than the collector's limit.
    let segment: i64 = sqlx::query_scalar(
        "UPDATE ferry.ferry_segments SET state = 'pending', created_at = now() - interval '2 hours'
         WHERE tenant_id = 'acme' AND state = 'live' RETURNING segment_id",
    )
    .fetch_one(&store_pool)
    .await
    .unwrap();
    let mut commit = store_pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM ferry.ferry_segments WHERE segment_id = $1 FOR UPDATE")
        .bind(segment)
        .execute(&mut *commit)
        .await
        .unwrap();
    let collecting = {
        let tiering = f.tiering.clone();
        tokio::spawn(async move { tiering.collect_garbage(Duration::from_secs(3600)).await })
    };
    let databases = vec![database_name(&store_pool).await];
    until_waiting(&store_pool, &databases, 1).await;
    sqlx::query("UPDATE ferry.ferry_segments SET state = 'live' WHERE segment_id = $1")
        .bind(segment)
        .execute(&mut *commit)
        .await
        .unwrap();
    commit.commit().await.unwrap();
    assert_eq!(collecting.await.unwrap().unwrap(), 0, "nothing was garbage");
    assert_eq!(
        f.note("acme", 5).await,
        before,
        "the segment's rows read back"
    );
    assert_eq!(f.change("acme", Action::Advance).await, Phase::Shadow);
    assert_eq!(
        f.change("acme", Action::Advance).await,
        Phase::TargetPrimary
    );
    f.tiering.delete_hot_copies(&t, 50).await.ok();
    assert!(
        f.tiering
            .cold_get(&t, &f.tiering.parse_key(&["5"]).unwrap())
            .await
            .is_ok(),
        "the live segment's object is there"
    );
}
