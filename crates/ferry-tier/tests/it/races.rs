//! Races 4 and 5 of ARCHITECTURE.md, and an unavailable object store, provoked on a real
//! PostgreSQL hot table, both control stores and a real local object store.

use ferry_domain::{Action, Phase};
use ferry_testkit::{TestStore, both_stores};
use ferry_tier::TableError;

use crate::fixture::{Fixture, cutoff_day, note, tenant};

both_stores!(
    a_buffered_change_is_read_back_before_it_is_applied,
    an_insert_of_an_archived_key_is_refused,
    an_unavailable_cold_tier_falls_back_errors_and_retries,
    a_row_whose_age_moves_later_is_archived_once,
    bad_input_is_refused_and_legacy_resets_the_cold_tier,
    hot_copies_with_buffered_changes_are_kept,
);

/// Archives acme's ids 1..=100 in dual_write and walks it to `to`.
async fn archived_up_to(f: &Fixture, to: Phase) {
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    let report = f
        .tiering
        .archive(&tenant("acme"), &cutoff_day(100))
        .await
        .unwrap();
    assert_eq!((report.rows, report.segments, report.requeued), (100, 1, 0));
    // Nothing newer than the cutoff, and no other tenant, was archived.
    assert_eq!(
        f.store
            .store
            .segments(&f.migration, &tenant("other"))
            .await
            .unwrap()
            .len(),
        0
    );
    let mut phase = Phase::DualWrite;
    while phase != to {
        phase = f.change("acme", Action::Advance).await;
    }
}

/// Race 4: an acknowledged update is still in the buffer when the key is read.
async fn a_buffered_change_is_read_back_before_it_is_applied(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    archived_up_to(&f, Phase::TargetOnly).await;
    let deleted = f
        .tiering
        .delete_hot_copies(&tenant("acme"), 30)
        .await
        .unwrap();
    assert_eq!(deleted, 100);
    assert_eq!(
        f.hot_rows("acme").await.len(),
        200,
        "only the recent rows stay hot"
    );

    let t = tenant("acme");
    let written = f
        .table
        .update(&t, &["5"], note("five, updated"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(written["note"], "five, updated");
    assert_eq!(written["amount"], 2.5, "columns not changed are kept");
    assert!(f.table.delete(&t, &["6"]).await.unwrap());
    assert!(
        !f.table.delete(&t, &["6"]).await.unwrap(),
        "already deleted"
    );
    // Not applied yet: reads merge the buffer.
    assert_eq!(
        f.store
            .store
            .pending_updates(&f.migration, &t)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(f.note("acme", 5).await.as_deref(), Some("five, updated"));
    assert_eq!(f.note("acme", 6).await, None);
    assert_eq!(f.note("acme", 7).await.as_deref(), Some("note 7"));
    // Applied: the segment was rewritten; the same answers.
    assert_eq!(f.tiering.apply_buffer(&t).await.unwrap(), 2);
    assert!(
        f.store
            .store
            .pending_updates(&f.migration, &t)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.note("acme", 5).await.as_deref(), Some("five, updated"));
    assert_eq!(f.note("acme", 6).await, None);
    let segments = f.store.store.segments(&f.migration, &t).await.unwrap();
    assert_eq!((segments.len(), segments[0].rows), (1, 99));
    // The replaced segment's object is garbage, then gone.
    assert_eq!(
        f.tiering
            .collect_garbage(std::time::Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.note("acme", 5).await.as_deref(), Some("five, updated"));
    // Hot rows are still served from hot.
    assert_eq!(f.note("acme", 250).await.as_deref(), Some("note 250"));
    assert!(
        f.table
            .stats
            .reads_cold
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}

/// Race 5: a key that lives only in the cold tier is inserted again.
async fn an_insert_of_an_archived_key_is_refused(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    archived_up_to(&f, Phase::TargetPrimary).await;
    let t = tenant("acme");
    let mut row = note("again");
    row.insert("id".into(), serde_json::json!(8));
    row.insert("at".into(), serde_json::json!("2020-01-01T00:00:00Z"));
    // target_primary: the hot copy is still there and its unique key refuses it.
    let err = f.table.insert(&t, row.clone()).await.unwrap_err();
    assert!(matches!(err, TableError::Duplicate { .. }), "{err}");

    assert_eq!(f.change("acme", Action::Advance).await, Phase::TargetOnly);
    f.tiering.delete_hot_copies(&t, 1000).await.unwrap();
    // target_only: no hot copy; the location lookup refuses it.
    let err = f.table.insert(&t, row.clone()).await.unwrap_err();
    assert!(matches!(err, TableError::Duplicate { .. }), "{err}");
    assert!(err.to_string().contains("duplicate key [\"8\"]"), "{err}");
    assert_eq!(f.note("acme", 8).await.as_deref(), Some("note 8"));
    // Deleted (buffered), the key may be inserted again, as a hot row, and reads find it
    // both before and after the delete is applied to its segment.
    assert!(f.table.delete(&t, &["9"]).await.unwrap());
    let mut again = note("nine again");
    again.insert("id".into(), serde_json::json!(9));
    again.insert("at".into(), serde_json::json!("2020-01-10T00:00:00Z"));
    f.table.insert(&t, again).await.unwrap();
    assert_eq!(f.note("acme", 9).await.as_deref(), Some("nine again"));
    f.tiering.apply_buffer(&t).await.unwrap();
    assert_eq!(f.note("acme", 9).await.as_deref(), Some("nine again"));
    // A new key goes in.
    let mut new = note("new");
    new.insert("id".into(), serde_json::json!(100_000));
    new.insert("at".into(), serde_json::json!("2026-06-01T00:00:00Z"));
    f.table.insert(&t, new).await.unwrap();
    assert_eq!(f.note("acme", 100_000).await.as_deref(), Some("new"));

    // A step back to target_primary before the restore: the hot copies are still gone, and
    // the location lookup still refuses the archived key.
    assert_eq!(
        f.change("acme", Action::Rollback).await,
        Phase::TargetPrimary
    );
    let err = f.table.insert(&t, row.clone()).await.unwrap_err();
    assert!(matches!(err, TableError::Duplicate { .. }), "{err}");
    assert_eq!(f.note("acme", 8).await.as_deref(), Some("note 8"));
}

/// Replaces the cold directory by a file (root ignores permissions), or puts it back.
fn break_cold(f: &Fixture, broken: bool) {
    let dir = f.cold_dir.path();
    let aside = dir.with_extension("aside");
    if broken {
        std::fs::rename(dir, &aside).unwrap();
        std::fs::write(dir, b"not a directory").unwrap();
    } else {
        std::fs::remove_file(dir).unwrap();
        std::fs::rename(&aside, dir).unwrap();
    }
}

async fn an_unavailable_cold_tier_falls_back_errors_and_retries(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    archived_up_to(&f, Phase::TargetPrimary).await;
    let t = tenant("acme");
    break_cold(&f, true);
    // target_primary: reads fall back to the hot copy, writes still go through the buffer.
    assert_eq!(f.note("acme", 10).await.as_deref(), Some("note 10"));
    assert_eq!(
        f.table
            .stats
            .fallbacks
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    f.table
        .update(&t, &["10"], note("ten, while down"))
        .await
        .unwrap();
    assert_eq!(
        f.note("acme", 10).await.as_deref(),
        Some("ten, while down"),
        "merged from the buffer"
    );
    // The buffer worker cannot apply it: the attempt is counted, the change stays pending.
    assert!(f.tiering.apply_buffer(&t).await.is_err());
    let pending = f
        .store
        .store
        .pending_updates(&f.migration, &t)
        .await
        .unwrap();
    assert_eq!((pending.len(), pending[0].attempts), (1, 1));
    assert!(pending[0].last_error.is_some());
    break_cold(&f, false);
    assert_eq!(f.tiering.apply_buffer(&t).await.unwrap(), 1);
    assert_eq!(f.note("acme", 10).await.as_deref(), Some("ten, while down"));

    // target_only: a cold error is the caller's error, never a silent wrong answer.
    assert_eq!(f.change("acme", Action::Advance).await, Phase::TargetOnly);
    f.tiering.delete_hot_copies(&t, 1000).await.unwrap();
    break_cold(&f, true);
    let err = f.table.get(&t, &["10"]).await.unwrap_err();
    assert!(
        matches!(
            err,
            TableError::ColdUnavailable {
                phase: Phase::TargetOnly,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("cannot answer"), "{err}");
    assert!(f.table.update(&t, &["11"], note("x")).await.is_err());
    assert!(matches!(
        f.table.scan(&t, None, None, 10).await.unwrap_err(),
        TableError::ColdUnavailable { .. }
    ));
    // Several failed attempts park a change as dead; an operator retries it.
    f.store
        .store
        .enqueue_update(
            &f.migration,
            &t,
            "[\"12\"]",
            "delete",
            &serde_json::Value::Null,
        )
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(f.tiering.apply_buffer(&t).await.is_err());
    }
    let open = f.store.store.open_updates(&f.migration).await.unwrap();
    assert_eq!(open.iter().filter(|u| u.state == "dead").count(), 1);
    break_cold(&f, false);
    assert!(f.store.store.retry_update(open[0].seq).await.unwrap());
    assert_eq!(f.tiering.apply_buffer(&t).await.unwrap(), 1);
    assert_eq!(f.note("acme", 12).await, None);
    assert_eq!(f.note("acme", 10).await.as_deref(), Some("ten, while down"));
}

/// An update moving an archived row's age into a later window (an `updated_at` age column)
/// must not archive it a second time: the key stays in its segment, where the buffer brings
/// the change.
async fn a_row_whose_age_moves_later_is_archived_once(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    let t = tenant("acme");
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    f.tiering.archive(&t, &cutoff_day(100)).await.unwrap();
    let mut moved = note("moved later");
    moved.insert("at".into(), serde_json::json!(cutoff_day(150)));
    f.table.update(&t, &["5"], moved).await.unwrap().unwrap();
    let second = f.tiering.archive(&t, &cutoff_day(200)).await.unwrap();
    assert_eq!(second.rows, 100, "ids 101..=200, not id 5 again");
    f.tiering.apply_buffer(&t).await.unwrap();
    let mut keys = Vec::new();
    for s in f.store.store.segments(&f.migration, &t).await.unwrap() {
        for b in f
            .tiering
            .cold
            .read(&object_store::path::Path::from(s.path.as_str()))
            .await
            .unwrap()
        {
            for row in 0..b.num_rows() {
                keys.push(
                    f.tiering.hot.normalize(&b, row).await.unwrap()["id"]
                        .as_i64()
                        .unwrap(),
                );
            }
        }
    }
    let unique: std::collections::BTreeSet<i64> = keys.iter().copied().collect();
    assert_eq!(keys.len(), unique.len(), "a key in two segments");
    assert_eq!(unique.len(), 200);
    for phase in [Phase::Shadow, Phase::TargetPrimary] {
        assert_eq!(f.change("acme", Action::Advance).await, phase);
    }
    assert_eq!(f.note("acme", 5).await.as_deref(), Some("moved later"));
}

/// An infinite timestamp cannot be archived: the run says which column and row, and nothing is
/// committed. Updates of the tenant or key columns, or of columns that do not exist, are
/// refused. A rollback to legacy retires the tenant's segments, so a new advance archives
/// afresh.
async fn bad_input_is_refused_and_legacy_resets_the_cold_tier(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    let t = tenant("acme");
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    sqlx::query("UPDATE public.events SET at = '-infinity' WHERE tenant_id = 'acme' AND id = 3")
        .execute(&f.pool)
        .await
        .unwrap();
    let err = f
        .tiering
        .archive(&t, &cutoff_day(100))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("column at") && err.contains("infinity") && err.contains("[3]"),
        "{err}"
    );
    assert!(
        f.store
            .store
            .segments(&f.migration, &t)
            .await
            .unwrap()
            .is_empty()
    );
    sqlx::query("UPDATE public.events SET at = '2020-01-03' WHERE tenant_id = 'acme' AND id = 3")
        .execute(&f.pool)
        .await
        .unwrap();
    assert_eq!(
        f.tiering.archive(&t, &cutoff_day(100)).await.unwrap().rows,
        100
    );

    let mut other = note("x");
    other.insert("tenant_id".into(), serde_json::json!("other"));
    let err = f
        .table
        .update(&t, &["5"], other)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tenant and key columns cannot be updated"),
        "{err}"
    );
    let err = f
        .table
        .update(&t, &["5"], {
            let mut r = note("x");
            r.insert("nope".into(), serde_json::json!(1));
            r
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a column"), "{err}");
    assert_eq!(
        f.note("acme", 5).await.as_deref(),
        Some("note 5"),
        "nothing written"
    );

    assert_eq!(f.change("acme", Action::Rollback).await, Phase::Legacy);
    assert_eq!(f.tiering.reset(&t).await.unwrap(), 1);
    assert!(
        f.store
            .store
            .segments(&f.migration, &t)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert_eq!(
        f.tiering.archive(&t, &cutoff_day(100)).await.unwrap().rows,
        100,
        "afresh"
    );
}

/// Hot-copy deletion never deletes the hot row of a key with a buffered change: that row may
/// be new (the archived one deleted, the key inserted again) until the change reaches the
/// segment. A dead change (never applied by the worker) keeps it there for good.
async fn hot_copies_with_buffered_changes_are_kept(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    archived_up_to(&f, Phase::TargetOnly).await;
    let t = tenant("acme");
    let seq = f
        .store
        .store
        .enqueue_update(
            &f.migration,
            &t,
            "[\"20\"]",
            "delete",
            &serde_json::Value::Null,
        )
        .await
        .unwrap();
    f.store
        .store
        .record_update_failure(&[seq], "test", 1)
        .await
        .unwrap();
    assert_eq!(f.tiering.delete_hot_copies(&t, 7).await.unwrap(), 99);
    let hot = f.hot_rows("acme").await;
    assert!(
        hot.contains_key(&20),
        "the key with a buffered change keeps its hot row"
    );
    assert!(!hot.contains_key(&21));
}
