use std::time::Duration;

use ferry_copier::{CopyError, Outcome};
use ferry_domain::{Action, Phase};
use ferry_store::{CopyControl, CopyDirection};
use ferry_testkit::{TestStore, both_stores};

use crate::fixture::{Fixture, tenant};

both_stores!(
    copies_one_tenant_exactly_and_touches_no_other,
    an_interrupted_copy_resumes_from_its_checkpoint,
    operator_controls_stop_the_copy,
    drift_is_recorded_and_blocks_the_authority_flip,
    reverse_copy_restores_the_source_and_retirement_deletes_it,
    a_row_written_into_a_clear_range_mid_batch_falls_back_to_the_upsert,
    a_trigger_rewriting_target_rows_is_caught_by_validation,
);

async fn copies_one_tenant_exactly_and_touches_no_other(store: &TestStore) {
    let f = Fixture::new(
        store.reopen_as_test_store().await,
        &[("t1", 1000), ("t2", 300), ("t3", 10)],
        serde_json::json!({}),
    )
    .await;
    let copier = f.copier().await;
    let before = (
        f.digest("public", "t1").await,
        f.digest("public", "t2").await,
    );
    // In legacy nothing is copied.
    assert_eq!(
        copier
            .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
            .await
            .unwrap(),
        Outcome::NotInPhase(Phase::Legacy)
    );
    f.change("t1", Action::Advance).await;
    let mut batches = 0;
    let outcome = copier
        .copy(&tenant("t1"), CopyDirection::Forward, |_| batches += 1)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Complete {
            rows: 1000,
            repaired: 0,
            mismatches: 0,
            resumed_at: 0,
        }
    );
    assert!(batches > 5, "small batches: {batches}");
    assert_eq!(
        f.digest("moved", "t1").await,
        f.digest("public", "t1").await
    );
    assert_eq!(f.digest("moved", "t2").await.0, 0, "t2 was not asked for");
    assert_eq!(
        (
            f.digest("public", "t1").await,
            f.digest("public", "t2").await
        ),
        before
    );
    let progress = f
        .store()
        .progress(&f.migration, Some(&tenant("t1")))
        .await
        .unwrap();
    assert!(progress[0].complete);
    assert_eq!(
        (progress[0].rows_done, progress[0].rows_total),
        (1000, 1000)
    );
    // Running it again is a no-op, and the guard now passes.
    assert_eq!(
        copier
            .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
            .await
            .unwrap(),
        Outcome::AlreadyComplete
    );
    assert_eq!(f.change("t1", Action::Advance).await, Phase::Shadow);
}

async fn an_interrupted_copy_resumes_from_its_checkpoint(store: &TestStore) {
    let f = Fixture::new(
        store.reopen_as_test_store().await,
        &[("t1", 2000)],
        serde_json::json!({}),
    )
    .await;
    f.change("t1", Action::Advance).await;
    // Slow the copy down so the first attempt is cut off half-way, like a crash: the future
    // is dropped wherever it is, possibly between the target's commit and the checkpoint.
    f.store()
        .set_control(
            &f.migration,
            None,
            CopyControl {
                rate_limit: Some(2000),
                ..CopyControl::default()
            },
        )
        .await
        .unwrap();
    let copier = f.copier().await;
    // Cut the first attempt once a third is copied, like a crash: the future is dropped
    // wherever it is, possibly between the target's commit and the checkpoint.
    let (progress, mut reported) = tokio::sync::watch::channel(0u64);
    let t1 = tenant("t1");
    let first = copier.copy(&t1, CopyDirection::Forward, |p| {
        let _ = progress.send(p.rows_done);
    });
    tokio::select! {
        outcome = first => panic!("the first attempt must be interrupted: {outcome:?}"),
        _ = reported.wait_for(|rows| *rows >= 600) => {}
    }
    let checkpoint = f
        .store()
        .progress(&f.migration, Some(&tenant("t1")))
        .await
        .unwrap();
    let done = checkpoint[0].rows_done;
    assert!(done > 0 && done < 2000, "checkpoint at {done}");
    assert!(checkpoint[0].last_key.is_some());
    f.store()
        .set_control(&f.migration, None, CopyControl::default())
        .await
        .unwrap();
    // The second run resumes after the checkpoint: its first batch already counts more than
    // the checkpoint (a copy that started over would report a few dozen rows).
    let mut first_report = None;
    let outcome = f
        .copier()
        .await
        .copy(&tenant("t1"), CopyDirection::Forward, |p| {
            first_report.get_or_insert(p.rows_done);
        })
        .await
        .unwrap();
    let first_report = first_report.expect("the second run copied something");
    assert!(
        first_report > done,
        "the second run started at {done}, not over: its first batch reported {first_report}"
    );
    // It reports what it copied itself: the rest after the checkpoint, not the total.
    let Outcome::Complete {
        rows,
        mismatches: 0,
        resumed_at,
        ..
    } = outcome
    else {
        panic!("{outcome:?}");
    };
    assert_eq!((rows, resumed_at), (2000 - done, done), "{outcome:?}");
    assert_eq!(
        f.digest("moved", "t1").await,
        f.digest("public", "t1").await
    );
}

async fn operator_controls_stop_the_copy(store: &TestStore) {
    let f = Fixture::new(
        store.reopen_as_test_store().await,
        &[("t1", 500)],
        serde_json::json!({}),
    )
    .await;
    f.change("t1", Action::Advance).await;
    let copier = f.copier().await;
    f.store()
        .set_control(
            &f.migration,
            Some(&tenant("t1")),
            CopyControl {
                paused: true,
                ..CopyControl::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        copier
            .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
            .await
            .unwrap(),
        Outcome::Paused
    );
    let p = f
        .store()
        .progress(&f.migration, Some(&tenant("t1")))
        .await
        .unwrap();
    assert_eq!(p[0].throttled.as_deref(), Some("paused by an operator"));
    f.store()
        .set_control(
            &f.migration,
            Some(&tenant("t1")),
            CopyControl {
                cancelled: true,
                ..CopyControl::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        copier
            .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
            .await
            .unwrap(),
        Outcome::Cancelled
    );
    f.store()
        .set_control(&f.migration, Some(&tenant("t1")), CopyControl::default())
        .await
        .unwrap();
    assert!(matches!(
        copier
            .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
            .await
            .unwrap(),
        Outcome::Complete { rows: 500, .. }
    ));
    // A paused tenant (its phase flag) holds the copier too.
    f.change("t1", Action::Pause).await;
    assert_eq!(
        copier
            .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
            .await
            .unwrap(),
        Outcome::AlreadyComplete
    );
}

async fn drift_is_recorded_and_blocks_the_authority_flip(store: &TestStore) {
    let f = Fixture::new(
        store.reopen_as_test_store().await,
        &[("t1", 300)],
        serde_json::json!({}),
    )
    .await;
    f.change("t1", Action::Advance).await;
    let copier = f.copier().await;
    copier
        .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
        .await
        .unwrap();
    f.change("t1", Action::Advance).await;
    // Something writes the target behind Ferry's back.
    sqlx::query("UPDATE moved.orders SET amount = amount + 1 WHERE tenant_id = 't1' AND id = 42")
        .execute(&f.pool)
        .await
        .unwrap();
    let diff = copier
        .verify(&tenant("t1"), CopyDirection::Forward)
        .await
        .unwrap();
    assert_eq!(diff.differing, ["[\"42\"]"]);
    let err = f
        .engine()
        .change(
            &f.migration,
            &tenant("t1"),
            Action::Advance,
            &crate::fixture::req(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("1 unresolved validation mismatch"),
        "{err}"
    );
    // Repaired by hand; verify resolves the mismatch and the flip may go ahead.
    sqlx::query("UPDATE moved.orders SET amount = amount - 1 WHERE tenant_id = 't1' AND id = 42")
        .execute(&f.pool)
        .await
        .unwrap();
    assert!(
        copier
            .verify(&tenant("t1"), CopyDirection::Forward)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.change("t1", Action::Advance).await, Phase::TargetPrimary);
}

async fn reverse_copy_restores_the_source_and_retirement_deletes_it(store: &TestStore) {
    let f = Fixture::new(
        store.reopen_as_test_store().await,
        &[("t1", 400), ("t2", 50)],
        serde_json::json!({}),
    )
    .await;
    let copier = f.copier().await;
    f.change("t1", Action::Advance).await;
    copier
        .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
        .await
        .unwrap();
    for _ in 0..3 {
        f.change("t1", Action::Advance).await;
    }
    // In target_only only the target is written.
    sqlx::query("UPDATE moved.orders SET note = 'changed in target_only', version = version + 1 WHERE tenant_id = 't1' AND id <= 10")
        .execute(&f.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM moved.orders WHERE tenant_id = 't1' AND id BETWEEN 11 AND 15")
        .execute(&f.pool)
        .await
        .unwrap();
    assert_eq!(f.change("t1", Action::Rollback).await, Phase::TargetPrimary);
    let outcome = copier
        .copy(&tenant("t1"), CopyDirection::Reverse, |_| {})
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Complete { mismatches: 0, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        f.digest("public", "t1").await,
        f.digest("moved", "t1").await,
        "deleted rows are gone from the source too"
    );
    assert_eq!(f.change("t1", Action::Rollback).await, Phase::Shadow);
    // Forward again (to target_only: the source may not be retired yet), then complete.
    for _ in 0..2 {
        f.change("t1", Action::Advance).await;
    }
    let err = copier
        .retire_source(&tenant("t1"), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, CopyError::Plan(_)), "{err}");
    f.change("t1", Action::Advance).await;
    let t2 = f.digest("public", "t2").await;
    let deleted = copier.retire_source(&tenant("t1"), |_| {}).await.unwrap();
    assert_eq!(deleted, 395);
    assert_eq!(f.digest("public", "t1").await.0, 0);
    assert_eq!(
        f.digest("public", "t2").await,
        t2,
        "other tenants untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_refuse_tables_they_cannot_copy() {
    let f = Fixture::new(
        TestStore::sqlite().await,
        &[("t1", 5)],
        serde_json::json!({}),
    )
    .await;
    let open = |sql: &'static str| {
        let f = &f;
        async move {
            sqlx::raw_sql(sql).execute(&f.pool).await.unwrap();
            match ferry_copier::Copier::open(
                f.store().clone(),
                f.engine(),
                &f.migration,
                f.pool.clone(),
                f.pool.clone(),
                true,
            )
            .await
            {
                Ok(_) => panic!("planned a copy that must be refused"),
                Err(e) => e.to_string(),
            }
        }
    };
    let err = open("ALTER TABLE public.orders DROP CONSTRAINT orders_pkey").await;
    assert!(err.contains("public.orders has no primary key"), "{err}");
    let err = open("ALTER TABLE public.orders ADD PRIMARY KEY (tenant_id, id); ALTER TABLE public.orders ALTER COLUMN version TYPE text").await;
    assert!(
        err.contains("version column version of public.orders is text"),
        "{err}"
    );
    let err = open("ALTER TABLE public.orders ALTER COLUMN version TYPE bigint USING version::bigint; CREATE SCHEMA moved; CREATE TABLE moved.orders (tenant_id text, id bigint, PRIMARY KEY (tenant_id, id))").await;
    assert!(err.contains("does not have the same columns"), "{err}");
    let err = open("DROP TABLE moved.orders; ALTER TABLE public.orders DROP CONSTRAINT orders_pkey; ALTER TABLE public.orders ADD PRIMARY KEY (id)").await;
    assert!(
        err.contains("does not include the tenant column tenant_id"),
        "{err}"
    );
    // A plan whose source and target are one table (say, a forgotten --target-url) would
    // delete the tenant's data when the source is retired.
    sqlx::raw_sql("ALTER TABLE public.orders DROP CONSTRAINT orders_pkey; ALTER TABLE public.orders ADD PRIMARY KEY (tenant_id, id)")
        .execute(&f.pool)
        .await
        .unwrap();
    let same = f.store().migration(&f.migration).await.unwrap();
    let mut config = same.config.clone();
    config["target"] = serde_json::json!({"schema": "public", "table": "orders"});
    let m = ferry_domain::MigrationId::new("same_table").unwrap();
    f.store()
        .create_migration(&ferry_store::NewMigration {
            id: m.clone(),
            kind: ferry_store::MigrationKind::TenantMove,
            description: String::new(),
            config,
            created_by: "test".into(),
        })
        .await
        .unwrap();
    let err = match ferry_copier::Copier::open(
        f.store().clone(),
        f.engine(),
        &m,
        f.pool.clone(),
        f.pool.clone(),
        true,
    )
    .await
    {
        Ok(_) => panic!("planned a copy of a table onto itself"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("source and target are the same table public.orders"),
        "{err}"
    );
    sqlx::raw_sql("CREATE TABLE moved.orders (LIKE public.orders INCLUDING ALL)")
        .execute(&f.pool)
        .await
        .unwrap();
    // Nothing was written to the target by the refusals.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM moved.orders")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_target_rows_are_refused_unless_overwritten() {
    let f = Fixture::new(
        TestStore::sqlite().await,
        &[("t1", 100)],
        serde_json::json!({}),
    )
    .await;
    let copier = f.copier().await;
    // The target already holds a different row 7 for t1 (someone else's data).
    sqlx::query(
        "INSERT INTO moved.orders SELECT * FROM public.orders WHERE tenant_id = 't1' AND id = 7",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE moved.orders SET note = 'theirs', version = 99 WHERE id = 7")
        .execute(&f.pool)
        .await
        .unwrap();
    f.change("t1", Action::Advance).await;
    let err = copier
        .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, CopyError::TargetConflict { count: 1, .. }),
        "{err}"
    );
    let theirs: String = sqlx::query_scalar("SELECT note FROM moved.orders WHERE id = 7")
        .fetch_one(&f.pool)
        .await
        .unwrap();
    assert_eq!(theirs, "theirs", "nothing overwritten");
    // With --overwrite the copy replaces it with the source's row.
    let outcome = f
        .copier()
        .await
        .overwrite(true)
        .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            Outcome::Complete {
                rows: 100,
                mismatches: 0,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        f.digest("moved", "t1").await,
        f.digest("public", "t1").await
    );
}

/// Source and target in different databases: rows travel through the copier (as JSON, types
/// intact) instead of one statement, with the same locking, guard and validation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_across_databases() {
    let f = Fixture::new(
        TestStore::sqlite().await,
        &[("t1", 700), ("t2", 20)],
        serde_json::json!({}),
    )
    .await;
    let other = ferry_testkit::TestDb::new().await;
    let target = ferry_copier::connect(other.url(), "connect").await.unwrap();
    let ddl = crate::fixture::TABLE.replace("public.orders", "moved.orders");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA moved; {ddl}")))
        .execute(&target)
        .await
        .unwrap();
    let copier = ferry_copier::Copier::open(
        f.store().clone(),
        f.engine(),
        &f.migration,
        f.pool.clone(),
        target.clone(),
        false,
    )
    .await
    .unwrap();
    f.change("t1", Action::Advance).await;
    let outcome = copier
        .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            Outcome::Complete {
                rows: 700,
                mismatches: 0,
                ..
            }
        ),
        "{outcome:?}"
    );
    let digest = |pool: sqlx::PgPool, schema: &'static str| async move {
        let sql = format!(
            "SELECT count(*), md5(string_agg(o::text, '|' ORDER BY id)) FROM {schema}.orders o WHERE tenant_id = 't1'"
        );
        sqlx::query_as::<_, (i64, String)>(sqlx::AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(
        digest(target.clone(), "moved").await,
        digest(f.pool.clone(), "public").await
    );
    assert!(
        copier
            .verify(&tenant("t1"), CopyDirection::Forward)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A batch whose destination range looked clear goes in by a plain `INSERT`; a dual write
/// committing a row there meanwhile makes it fail with a unique violation, and the batch must
/// then be repeated with the version-guarded upsert, not fail the copy or overwrite the row.
async fn a_row_written_into_a_clear_range_mid_batch_falls_back_to_the_upsert(store: &TestStore) {
    let f = Fixture::new(
        store.reopen_as_test_store().await,
        &[("t1", 300)],
        serde_json::json!({}),
    )
    .await;
    let copier = std::sync::Arc::new(f.copier().await);
    f.change("t1", Action::Advance).await;
    // The dual write of key 5: the source first (committed), then the target, held open.
    sqlx::query(
        "UPDATE public.orders SET note = 'dual', version = version + 1 WHERE tenant_id = 't1' AND id = 5",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    let mut writer = f.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO moved.orders SELECT * FROM public.orders WHERE tenant_id = 't1' AND id = 5",
    )
    .execute(&mut *writer)
    .await
    .unwrap();
    let copy = {
        let copier = copier.clone();
        tokio::spawn(async move {
            copier
                .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
                .await
        })
    };
    // Wait until the batch's plain insert waits on the uncommitted key 5, then commit it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND (query LIKE 'WITH batch%' OR query LIKE 'WITH clear%')",
        )
        .fetch_one(&f.pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the batch never met the uncommitted row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.commit().await.unwrap();
    let outcome = copy.await.unwrap().unwrap();
    assert_eq!(
        outcome,
        Outcome::Complete {
            rows: 300,
            repaired: 0,
            mismatches: 0,
            resumed_at: 0,
        }
    );
    assert_eq!(
        f.digest("moved", "t1").await,
        f.digest("public", "t1").await
    );
}

/// A plain insert's returned rows stand for the source's only when nothing rewrites inserts
/// into the destination; a trigger that does must not hide its rewrite from validation.
async fn a_trigger_rewriting_target_rows_is_caught_by_validation(store: &TestStore) {
    let f = Fixture::new(
        store.reopen_as_test_store().await,
        &[("t1", 120)],
        serde_json::json!({"copy": {"min_batch": 20, "max_batch": 50, "start_batch": 50}}),
    )
    .await;
    sqlx::raw_sql(
        "CREATE SCHEMA moved;
         CREATE TABLE moved.orders (LIKE public.orders INCLUDING ALL);
         CREATE FUNCTION moved.shout() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN NEW.note := upper(NEW.note); RETURN NEW; END $$;
         CREATE TRIGGER shout BEFORE INSERT ON moved.orders
             FOR EACH ROW EXECUTE FUNCTION moved.shout();",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    let copier = f.copier().await;
    f.change("t1", Action::Advance).await;
    let outcome = copier
        .copy(&tenant("t1"), CopyDirection::Forward, |_| {})
        .await
        .unwrap();
    let Outcome::Complete { mismatches, .. } = outcome else {
        panic!("{outcome:?}");
    };
    // Every row with a note that upper() changes differs (`note N ✓`; every 7th is NULL).
    assert_eq!(mismatches, 120 - 120 / 7, "{outcome:?}");
    let open = f
        .store()
        .open_mismatches(&f.migration, &tenant("t1"))
        .await
        .unwrap();
    assert_eq!(open.len() as u64, mismatches);
}
