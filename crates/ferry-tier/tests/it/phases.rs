//! The whole tiering of a tenant under concurrent writers: archiving in several phases, the
//! buffer worker, hot-copy deletion, a rollback from `target_only` (restore), and on to
//! `complete`. Every acknowledged write must read back at once and at the end; no key may
//! live in both tiers as two different rows; the other tenant is untouched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ferry_domain::{Action, Phase};
use ferry_testkit::{TestStore, both_stores};
use ferry_tier::TableError;
use tokio::sync::Mutex;

use crate::fixture::{Fixture, cutoff_day, note, tenant};

both_stores!(writers_race_archiving_through_every_phase_and_a_rollback);

const KEYS: i64 = 450;

/// What each key should read as (`None`: deleted or never inserted).
type Expected = BTreeMap<i64, Option<String>>;

async fn writer(
    f: Arc<Fixture>,
    expected: Arc<Mutex<Expected>>,
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
) -> Vec<String> {
    let t = tenant("acme");
    let mut problems = Vec::new();
    let mut n: u64 = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let id = 1 + (seed % KEYS as u64) as i64;
        let key = id.to_string();
        let mut exp = expected.lock().await;
        let before = exp.get(&id).cloned().flatten();
        let value = format!("w{n}");
        let outcome: Result<Option<String>, TableError> = match (before.is_some(), seed % 3) {
            (true, 0) => f.table.delete(&t, &[&key]).await.map(|_| None),
            (true, _) => f
                .table
                .update(&t, &[&key], note(&value))
                .await
                .map(|_| Some(value.clone())),
            (false, _) => {
                let mut row = note(&value);
                row.insert("id".into(), serde_json::json!(id));
                row.insert("at".into(), serde_json::json!("2026-06-01T00:00:00Z"));
                f.table.insert(&t, row).await.map(|_| Some(value.clone()))
            }
        };
        match outcome {
            Ok(now) => {
                exp.insert(id, now.clone());
                // Read your own acknowledged write, whatever the phase and the buffer.
                match f.table.get(&t, &[&key]).await {
                    Ok(row) => {
                        let got = row.map(|r| r["note"].as_str().unwrap_or_default().to_owned());
                        if got != now {
                            problems.push(format!("key {id}: wrote {now:?}, read {got:?}"));
                        }
                    }
                    Err(e) => problems.push(format!("key {id}: read failed: {e}")),
                }
            }
            Err(e) => problems.push(format!("key {id}: write failed: {e}")),
        }
        drop(exp);
        ops.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    problems
}

/// Waits until the writer has made `n` more operations: it ran in the current phase.
async fn writes_go_on(ops: &AtomicU64, n: u64) {
    let before = ops.load(Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while ops.load(Ordering::Relaxed) < before + n {
        assert!(std::time::Instant::now() < deadline, "the writer stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn writers_race_archiving_through_every_phase_and_a_rollback(store: &TestStore) {
    let f = Arc::new(Fixture::new(store.reopen_as_test_store().await, 400).await);
    let t = tenant("acme");
    let other_before = f.hot_rows("other").await;
    let expected: Arc<Mutex<Expected>> = Arc::new(Mutex::new(
        (1..=KEYS)
            .map(|id| (id, (id <= 400).then(|| format!("note {id}"))))
            .collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let writing = tokio::spawn(writer(
        f.clone(),
        expected.clone(),
        stop.clone(),
        ops.clone(),
    ));

    let archive = |day: i64| {
        let f = f.clone();
        async move {
            f.tiering
                .archive(&tenant("acme"), &cutoff_day(day))
                .await
                .unwrap()
        }
    };
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert!(archive(100).await.rows >= 90);
    assert_eq!(f.change("acme", Action::Advance).await, Phase::Shadow);
    archive(150).await;
    assert_eq!(
        f.change("acme", Action::Advance).await,
        Phase::TargetPrimary
    );
    f.tiering.apply_buffer(&t).await.unwrap();
    archive(200).await;
    assert_eq!(f.change("acme", Action::Advance).await, Phase::TargetOnly);
    f.tiering.delete_hot_copies(&t, 50).await.unwrap();
    archive(250).await;
    f.tiering.delete_hot_copies(&t, 50).await.unwrap();
    writes_go_on(&ops, 20).await;

    // Rollback from target_only: back to target_primary, restore hot, then to shadow.
    assert_eq!(
        f.change("acme", Action::Rollback).await,
        Phase::TargetPrimary
    );
    assert!(f.tiering.restore(&t).await.unwrap() > 0);
    assert_eq!(f.change("acme", Action::Rollback).await, Phase::Shadow);
    writes_go_on(&ops, 20).await;

    // And forward to the end.
    assert_eq!(
        f.change("acme", Action::Advance).await,
        Phase::TargetPrimary
    );
    assert_eq!(f.change("acme", Action::Advance).await, Phase::TargetOnly);
    f.tiering.delete_hot_copies(&t, 50).await.unwrap();
    assert_eq!(f.change("acme", Action::Advance).await, Phase::Complete);
    archive(300).await;
    f.tiering.delete_hot_copies(&t, 50).await.unwrap();
    writes_go_on(&ops, 20).await;

    stop.store(true, Ordering::Relaxed);
    let problems = writing.await.unwrap();
    assert!(
        problems.is_empty(),
        "{} problems, e.g. {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    f.tiering.apply_buffer(&t).await.unwrap();
    f.tiering
        .collect_garbage(Duration::from_secs(3600))
        .await
        .unwrap();

    let expected = expected.lock().await.clone();
    for (id, want) in &expected {
        assert_eq!(&f.note("acme", *id).await, want, "key {id} at the end");
    }
    // No key in both tiers as two different rows.
    let archived = f.tiers_agree("acme", &expected).await;
    assert!(archived > 200, "archived {archived}");
    // Scans merge both tiers in key order, bounded or not.
    let want: Vec<(i64, String)> = expected
        .iter()
        .filter_map(|(id, v)| v.clone().map(|v| (*id, v)))
        .collect();
    let scanned = |rows: Vec<ferry_tier::Row>| -> Vec<(i64, String)> {
        rows.iter()
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    r["note"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        scanned(f.table.scan(&t, None, None, 10_000).await.unwrap()),
        want
    );
    let window: Vec<(i64, String)> = want
        .iter()
        .filter(|(id, _)| (150..=420).contains(id))
        .take(40)
        .cloned()
        .collect();
    assert_eq!(
        scanned(
            f.table
                .scan(&t, Some(&["150"]), Some(&["420"]), 40)
                .await
                .unwrap()
        ),
        window
    );
    assert_eq!(
        f.hot_rows("other").await,
        other_before,
        "the other tenant is untouched"
    );
}
