//! Holes a review found in the tenant move's write path, each reproduced against a real
//! PostgreSQL, then closed. Every test is named after the hole it closes.

use std::sync::Arc;

use ferry_domain::Phase;
use ferry_move::{MovedTable, Row};

use crate::fixture::{fixture, row, until, waiting};

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

/// Item 4 of the review: two routers one phase apart (`shadow`, source first, and
/// `target_primary`, target first) insert one key at once. Each authoritative half succeeded
/// on its own side, each second half timed out on the other's row and went to the buffer:
/// two acknowledged inserts of one key, one per side. Now the key's lock serializes them:
/// the second finds the key taken and fails like a unique key would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_one_phase_apart_cannot_both_insert_one_key() {
    let f = Arc::new(fixture().await);
    f.enter(Phase::Shadow).await;
    // Holds the source's unique check for key 77, so the shadow router's insert waits there.
    let mut blocker = f.pool.begin().await.unwrap();
    sqlx::query("INSERT INTO public.orders (tenant_id, id, note) VALUES ('t1', 77, 'blocker')")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let shadow_insert = {
        let f = f.clone();
        tokio::spawn(async move { f.table.insert(&f.t1, row(Some(77), "via shadow")).await })
    };
    until("the shadow router waits", async || {
        waiting(&f.pool).await >= 1
    })
    .await;
    assert_eq!(f.force_advance().await, Phase::TargetPrimary);
    let (router2, table2) = f.second_router().await;
    assert_eq!(
        router2.phase(f.m.as_str(), "t1").unwrap().phase,
        Phase::TargetPrimary
    );
    let table2 = Arc::new(table2);
    let primary_insert = {
        let (table2, t1) = (table2.clone(), f.t1.clone());
        tokio::spawn(async move {
            table2
                .insert(&t1, row(Some(77), "via target_primary"))
                .await
        })
    };
    until("the second insert waits or is done", async || {
        primary_insert.is_finished() || waiting(&f.pool).await >= 2
    })
    .await;
    blocker.rollback().await.unwrap();
    let results = [
        shadow_insert.await.unwrap().is_ok(),
        primary_insert.await.unwrap().is_ok(),
    ];
    assert_eq!(
        results.iter().filter(|ok| **ok).count(),
        1,
        "exactly one insert of key 77 is acknowledged: {results:?}"
    );
    assert_eq!(f.note("public", 77).await, f.note("moved", 77).await);
}

/// Item 4 of the review: a router still on `shadow` updates a row while the tenant flips to
/// `target_primary`; its target half times out and is buffered after the flip. A router on
/// `target_primary` then updates another column of the row, building on the target, which
/// lacks the first change, and mirrors that newer image to the source: the first change,
/// acknowledged, was lost on both sides. Under the key's lock the buffered change is applied
/// to the target first, so the second write builds on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffered_change_is_not_overwritten_by_a_later_write_on_the_other_side() {
    let f = Arc::new(fixture().await);
    sqlx::raw_sql(
        "ALTER TABLE public.orders ADD COLUMN amount int;
         ALTER TABLE moved.orders ADD COLUMN amount int;",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    let table1 = Arc::new(
        MovedTable::open(
            f.router.clone(),
            f.store.store.clone(),
            &f.m,
            f.pool.clone(),
            f.pool.clone(),
        )
        .await
        .unwrap(),
    );
    f.enter(Phase::Shadow).await;
    // The target's row 3 is busy, so the shadow router's mirror of it times out.
    let mut busy = f.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM moved.orders WHERE tenant_id = 't1' AND id = 3 FOR UPDATE")
        .execute(&mut *busy)
        .await
        .unwrap();
    let first_write = {
        let (table1, t1) = (table1.clone(), f.t1.clone());
        tokio::spawn(async move { table1.update(&t1, &["3"], row(None, "A")).await })
    };
    until("the shadow router's mirror waits", async || {
        waiting(&f.pool).await >= 1
    })
    .await;
    assert_eq!(f.force_advance().await, Phase::TargetPrimary);
    assert!(
        first_write.await.unwrap().unwrap().is_some(),
        "acknowledged"
    );
    busy.commit().await.unwrap();
    assert_eq!(
        f.store
            .store
            .pending_updates(&f.m, &f.t1)
            .await
            .unwrap()
            .len(),
        1,
        "the target half waits in the buffer"
    );
    let (_router2, table2) = f.second_router().await;
    let mut amount = Row::new();
    amount.insert("amount".into(), serde_json::json!(9));
    table2.update(&f.t1, &["3"], amount).await.unwrap();
    for schema in ["public", "moved"] {
        let (note, amount): (String, Option<i32>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT note, amount FROM {schema}.orders WHERE tenant_id = 't1' AND id = 3"
        )))
        .fetch_one(&f.pool)
        .await
        .unwrap();
        assert_eq!((note.as_str(), amount), ("A", Some(9)), "{schema}");
    }
    assert!(
        f.store
            .store
            .pending_updates(&f.m, &f.t1)
            .await
            .unwrap()
            .is_empty(),
        "the buffered change was applied, and marked so"
    );
}

/// Item 4 of the review, its last sentence: in `target_primary` a read that fell back to the
/// source (the target failing) ignored the changes the buffer held for the source, so a
/// client did not read its own acknowledged write. They are merged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_read_sees_the_writes_still_buffered_for_its_side() {
    let f = fixture().await;
    f.enter(Phase::TargetPrimary).await;
    // The source's row 5 is busy: the write's source half times out into the buffer.
    let mut busy = f.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM public.orders WHERE tenant_id = 't1' AND id = 5 FOR UPDATE")
        .execute(&mut *busy)
        .await
        .unwrap();
    f.table
        .update(&f.t1, &["5"], row(None, "acknowledged"))
        .await
        .unwrap()
        .expect("row 5 exists");
    busy.commit().await.unwrap();
    assert_eq!(f.note("public", 5).await, Some(Some("n5".into())));
    // The target fails: reads fall back to the source.
    sqlx::raw_sql("ALTER TABLE moved.orders RENAME TO orders_away")
        .execute(&f.pool)
        .await
        .unwrap();
    let read = f.table.get(&f.t1, &["5"]).await.unwrap();
    sqlx::raw_sql("ALTER TABLE moved.orders_away RENAME TO orders")
        .execute(&f.pool)
        .await
        .unwrap();
    assert_eq!(
        read.map(|r| r["note"].clone()),
        Some(serde_json::json!("acknowledged")),
        "the fallback read shows the acknowledged write"
    );
    assert_eq!(
        f.table
            .stats
            .fallbacks
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Item 11 of the review: with `arbitrary_precision`, a JSON object whose one key is
/// `$serde_json::private::Number` was read back as a number: a row's document silently
/// changed. Such a row is refused by name instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_with_serde_jsons_reserved_key_is_refused_not_changed() {
    let f = fixture().await;
    sqlx::raw_sql(
        r#"UPDATE public.orders SET note = '{"$serde_json::private::Number": "12"}' WHERE id = 8"#,
    )
    .execute(&f.pool)
    .await
    .unwrap();
    // A text column holding that text is only text: it reads back as written.
    let read = f.table.get(&f.t1, &["8"]).await.unwrap().unwrap();
    assert_eq!(read["note"], r#"{"$serde_json::private::Number": "12"}"#);
    // In a json column it is an object, and would turn into the number 12.
    sqlx::raw_sql(
        r#"ALTER TABLE public.orders ADD COLUMN doc json;
           ALTER TABLE moved.orders ADD COLUMN doc json;
           UPDATE public.orders SET doc = '{"$serde_json::private::Number": "12"}' WHERE id = 9;"#,
    )
    .execute(&f.pool)
    .await
    .unwrap();
    let table = MovedTable::open(
        f.router.clone(),
        f.store.store.clone(),
        &f.m,
        f.pool.clone(),
        f.pool.clone(),
    )
    .await
    .unwrap();
    let err = table.get(&f.t1, &["9"]).await.unwrap_err();
    assert!(
        err.to_string().contains("$serde_json::private::Number"),
        "{err}"
    );
}
