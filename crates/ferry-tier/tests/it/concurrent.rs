//! Races 4 and 5 under real concurrency: four writers and two readers through two
//! application processes (each its own router, pool and `Tiering`), while the tenant walks
//! every phase and a rollback from `target_only`, archiving, hot-copy deletion and the other
//! process's buffer worker run at the same time.
//!
//! Each writer owns the keys `id % WRITERS == w` and notes each write with its own rising
//! sequence number, so what a read may return is known exactly: no older than the last
//! write acknowledged before the read began (race 4: a buffered change not merged into a read
//! shows as older), never a row deleted before it began (a resurrection), and no newer than
//! the write begun by its end. Race 5 is the refusal of an insert of a key that exists,
//! archived or hot, checked on every attempt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use ferry_domain::{Action, Phase};
use ferry_testkit::{TestStore, both_stores};
use ferry_tier::{TableError, TieredTable, Tiering};

use crate::fixture::{Fixture, cutoff_day, note, tenant};

both_stores!(
    two_buffer_workers_never_fail_a_change_for_racing_each_other,
    writers_and_readers_on_two_routers_race_archive_worker_and_deletion,
);

const WRITERS: u64 = 4;
const KEYS: u64 = 480;
const SEEDED: u64 = 400;

/// What one key's writer has published: the last acknowledged write (`seq << 1 | exists`),
/// the last write begun, and the last delete begun. Seq 0 is the seeded row.
#[derive(Default)]
struct KeyState {
    acked: AtomicU64,
    begun: AtomicU64,
    delete_begun: AtomicU64,
}

struct Shared {
    keys: Vec<KeyState>,
    stop: AtomicBool,
    ops: AtomicU64,
    refused_duplicates: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        let keys = (0..=KEYS)
            .map(|id| {
                let k = KeyState::default();
                k.acked.store(u64::from((1..=SEEDED).contains(&id)), SeqCst);
                k
            })
            .collect();
        Shared {
            keys,
            stop: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            refused_duplicates: AtomicU64::new(0),
        }
    }

    /// The note each key should read as, once every writer stopped.
    fn expected(&self) -> BTreeMap<i64, Option<String>> {
        (1..=KEYS)
            .map(|id| {
                let acked = self.keys[id as usize].acked.load(SeqCst);
                let note = (acked & 1 == 1).then(|| note_of(id, acked >> 1));
                (id as i64, note)
            })
            .collect()
    }
}

fn note_of(id: u64, seq: u64) -> String {
    if seq == 0 {
        format!("note {id}")
    } else {
        format!("w{}-{seq}", id % WRITERS)
    }
}

/// The sequence number a note was written with, if it was written by the key's own writer.
fn seq_of(id: u64, note: &str) -> Option<u64> {
    if note == format!("note {id}") {
        return Some(0);
    }
    let (writer, seq) = note.strip_prefix('w')?.split_once('-')?;
    (writer.parse::<u64>().ok()? == id % WRITERS)
        .then(|| seq.parse().ok())
        .flatten()
}

/// Whether a read of `id` returning `got` is one the history allows: `acked` was published
/// before it began, `begun` and `delete_begun` after it ended.
fn read_allowed(id: u64, got: Option<&str>, acked: u64, begun: u64, delete_begun: u64) -> bool {
    let (acked_seq, exists) = (acked >> 1, acked & 1 == 1);
    match got {
        None => !exists || delete_begun > acked_seq,
        Some(note) => seq_of(id, note).is_some_and(|seq| {
            seq <= begun.max(acked_seq) && (seq > acked_seq || (exists && seq == acked_seq))
        }),
    }
}

async fn read_checked(
    table: &TieredTable,
    shared: &Shared,
    id: u64,
    who: &str,
) -> Result<(), String> {
    let key = &shared.keys[id as usize];
    let acked = key.acked.load(SeqCst);
    let row = table
        .get(&tenant("acme"), &[&id.to_string()])
        .await
        .map_err(|e| format!("{who}: read of {id} failed: {e}"))?;
    let got = row.map(|r| r["note"].as_str().unwrap_or("<not text>").to_owned());
    let (begun, delete_begun) = (key.begun.load(SeqCst), key.delete_begun.load(SeqCst));
    if read_allowed(id, got.as_deref(), acked, begun, delete_begun) {
        Ok(())
    } else {
        Err(format!(
            "{who}: key {id} read {got:?}; acknowledged before the read: seq {} ({}), begun by its end: {begun}",
            acked >> 1,
            if acked & 1 == 1 { "present" } else { "deleted" },
        ))
    }
}

/// Makes one write of key `id` through `table`, publishing it before and after.
async fn write_one(
    table: &TieredTable,
    shared: &Shared,
    id: u64,
    seq: u64,
    roll: u64,
) -> Result<(), String> {
    let (t, key_text, state) = (tenant("acme"), id.to_string(), &shared.keys[id as usize]);
    let exists = state.acked.load(SeqCst) & 1 == 1;
    let value = note_of(id, seq);
    let mut row = note(&value);
    row.insert("id".into(), serde_json::json!(id));
    row.insert("at".into(), serde_json::json!("2026-06-01T00:00:00Z"));
    if exists && roll.is_multiple_of(6) {
        // Race 5: the key exists (hot, archived, or both); the insert must be refused.
        return match table.insert(&t, row).await {
            Err(TableError::Duplicate { .. }) => {
                shared.refused_duplicates.fetch_add(1, SeqCst);
                Ok(())
            }
            other => Err(format!("insert of existing key {id}: {other:?}")),
        };
    }
    state.begun.store(seq, SeqCst);
    let now_exists = if exists && roll.is_multiple_of(3) {
        state.delete_begun.store(seq, SeqCst);
        let deleted = table.delete(&t, &[&key_text]).await;
        if !deleted.map_err(|e| format!("delete {id}: {e}"))? {
            return Err(format!("delete of existing key {id} found nothing"));
        }
        false
    } else if exists {
        let updated = table.update(&t, &[&key_text], note(&value)).await;
        updated
            .map_err(|e| format!("update {id}: {e}"))?
            .ok_or_else(|| format!("update of existing key {id} found nothing"))?;
        true
    } else {
        table
            .insert(&t, row)
            .await
            .map_err(|e| format!("insert {id}: {e}"))?;
        true
    };
    state.acked.store(seq << 1 | u64::from(now_exists), SeqCst);
    Ok(())
}

/// Writes its own keys through both processes in turn, reading each acknowledged write back
/// through the other at once.
async fn writer(w: u64, tables: Arc<[TieredTable; 2]>, shared: Arc<Shared>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (w + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut seq = 0;
    while !shared.stop.load(SeqCst) {
        seq += 1;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let id = w + WRITERS * (seed % (KEYS / WRITERS)).max(1);
        let via = (seq % 2) as usize;
        let who = format!("writer {w}");
        let done = match write_one(&tables[via], &shared, id, seq, seed >> 8).await {
            Ok(()) => read_checked(&tables[1 - via], &shared, id, &who).await,
            Err(e) => Err(e),
        };
        problems.extend(done.err());
        shared.ops.fetch_add(1, SeqCst);
        tokio::task::yield_now().await;
    }
    problems
}

/// Reads random keys through both processes, checking each against the writers' history.
async fn reader(r: u64, tables: Arc<[TieredTable; 2]>, shared: Arc<Shared>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seed = 0xd1b5_4a32_d192_ed03 ^ (r + 7);
    let mut n = 0;
    while !shared.stop.load(SeqCst) {
        n += 1;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let id = 1 + seed % KEYS;
        let who = format!("reader {r}");
        let read = read_checked(&tables[n % 2], &shared, id, &who).await;
        problems.extend(read.err());
        tokio::task::yield_now().await;
    }
    problems
}

/// The other process's buffer worker, applying the tenant's buffer until stopped.
async fn buffer_worker(tiering: Arc<Tiering>, shared: Arc<Shared>) -> (u64, Vec<String>) {
    let (mut applied, mut problems) = (0, Vec::new());
    while !shared.stop.load(SeqCst) {
        match tiering.apply_buffer(&tenant("acme")).await {
            Ok(n) => applied += n,
            Err(e) => problems.push(format!("buffer worker: {e}")),
        }
        // A worker's poll interval, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (applied, problems)
}

/// Waits until the writers have made `n` more operations: they ran in the current phase.
async fn writes_go_on(shared: &Shared, n: u64) {
    let before = shared.ops.load(SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while shared.ops.load(SeqCst) < before + n {
        assert!(std::time::Instant::now() < deadline, "the writers stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Archiving up to `day` and deleting hot copies at once, while the writers go on.
async fn archive_and_delete(f: &Fixture, shared: &Shared, day: i64, delete: bool) -> u64 {
    let (t, cutoff) = (tenant("acme"), cutoff_day(day));
    let (archived, deleted, ()) = tokio::join!(
        f.tiering.archive(&t, &cutoff),
        async {
            if delete {
                f.tiering.delete_hot_copies(&t, 25).await.unwrap()
            } else {
                0
            }
        },
        writes_go_on(shared, 40),
    );
    archived.unwrap().rows + deleted
}

async fn writers_and_readers_on_two_routers_race_archive_worker_and_deletion(store: &TestStore) {
    let f = Arc::new(Fixture::new(store.reopen_as_test_store().await, SEEDED as i64).await);
    let other_before = f.hot_rows("other").await;
    let (worker_tiering, second_table) = f.second_process().await;
    let first_table = TieredTable::new(f.tiering.clone(), f.router.clone());
    let tables = Arc::new([first_table, second_table]);
    let shared = Arc::new(Shared::new());
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        tasks.push(tokio::spawn(writer(w, tables.clone(), shared.clone())));
    }
    for r in 0..2 {
        tasks.push(tokio::spawn(reader(r, tables.clone(), shared.clone())));
    }
    let worker = tokio::spawn(buffer_worker(worker_tiering, shared.clone()));

    let step = |action| {
        let f = f.clone();
        async move { f.change("acme", action).await }
    };
    assert_eq!(step(Action::Advance).await, Phase::DualWrite);
    assert!(archive_and_delete(&f, &shared, 100, false).await >= 90);
    assert_eq!(step(Action::Advance).await, Phase::Shadow);
    archive_and_delete(&f, &shared, 150, false).await;
    assert_eq!(step(Action::Advance).await, Phase::TargetPrimary);
    archive_and_delete(&f, &shared, 200, false).await;
    assert_eq!(step(Action::Advance).await, Phase::TargetOnly);
    archive_and_delete(&f, &shared, 250, true).await;
    // Back from target_only while the writers go on: restore, then shadow.
    assert_eq!(step(Action::Rollback).await, Phase::TargetPrimary);
    let acme = tenant("acme");
    let (restored, ()) = tokio::join!(f.tiering.restore(&acme), writes_go_on(&shared, 40));
    assert!(restored.unwrap() > 0);
    assert_eq!(step(Action::Rollback).await, Phase::Shadow);
    writes_go_on(&shared, 40).await;
    assert_eq!(step(Action::Advance).await, Phase::TargetPrimary);
    assert_eq!(step(Action::Advance).await, Phase::TargetOnly);
    archive_and_delete(&f, &shared, 300, true).await;
    assert_eq!(step(Action::Advance).await, Phase::Complete);
    archive_and_delete(&f, &shared, 350, true).await;

    shared.stop.store(true, SeqCst);
    let mut problems = Vec::new();
    for task in tasks {
        problems.extend(task.await.unwrap());
    }
    let (applied_by_worker, worker_problems) = worker.await.unwrap();
    problems.extend(worker_problems);
    assert!(
        problems.is_empty(),
        "{} problems, e.g. {:#?}",
        problems.len(),
        &problems[..problems.len().min(8)]
    );
    settled_as_written(&f, &tables, &shared, &other_before).await;
    let refused = shared.refused_duplicates.load(SeqCst);
    assert!(refused > 0, "no duplicate insert was tried");
    eprintln!(
        "{} operations, {refused} duplicate inserts refused, {applied_by_worker} buffered changes applied by the other process",
        shared.ops.load(SeqCst)
    );
}

/// After the race: every key reads as last written through both processes, the tiers
/// agree, nothing is left in the buffer or recorded as a mismatch, nothing was repaired.
async fn settled_as_written(
    f: &Fixture,
    tables: &[TieredTable; 2],
    shared: &Shared,
    other_before: &BTreeMap<i64, String>,
) {
    let t = tenant("acme");
    f.tiering.apply_buffer(&t).await.unwrap();
    let expected = shared.expected();
    for table in tables {
        for (id, want) in &expected {
            let got = table.get(&t, &[&id.to_string()]).await.unwrap();
            let got = got.map(|r| r["note"].as_str().unwrap().to_owned());
            assert_eq!(&got, want, "key {id} at the end");
        }
        assert_eq!(table.stats.shadow_mismatches.load(SeqCst), 0);
    }
    let archived = f.tiers_agree("acme", &expected).await;
    eprintln!("{archived} rows archived at the end");
    assert!(archived > 100, "archived {archived}");
    assert!(
        f.store
            .store
            .open_updates(&f.migration)
            .await
            .unwrap()
            .is_empty()
    );
    let mismatches = f
        .store
        .store
        .open_mismatches(&f.migration, &t)
        .await
        .unwrap();
    assert!(mismatches.is_empty(), "{mismatches:?}");
    assert_eq!(
        &f.hot_rows("other").await,
        other_before,
        "the other tenant is untouched"
    );
}

/// Two processes' buffer workers on one tenant: each rewrote the same segment and the
/// loser's manifest swap was refused as a conflict, which counted as a failed attempt of
/// changes that were fine; after `dead_after` (3 here) such races they were dead letters.
async fn two_buffer_workers_never_fail_a_change_for_racing_each_other(store: &TestStore) {
    let f = Fixture::new(store.reopen_as_test_store().await, 300).await;
    let t = tenant("acme");
    assert_eq!(f.change("acme", Action::Advance).await, Phase::DualWrite);
    assert_eq!(
        f.tiering.archive(&t, &cutoff_day(100)).await.unwrap().rows,
        100
    );
    let mut phase = Phase::DualWrite;
    while phase != Phase::TargetOnly {
        phase = f.change("acme", Action::Advance).await;
    }
    let (other, _) = f.second_process().await;
    for round in 0..12 {
        for id in 1..=20 {
            let (key, value) = (id.to_string(), format!("r{round}"));
            f.table.update(&t, &[&key], note(&value)).await.unwrap();
        }
        let (mine, theirs) = tokio::join!(f.tiering.apply_buffer(&t), other.apply_buffer(&t));
        let (mine, theirs) = (mine.unwrap(), theirs.unwrap());
        assert_eq!(mine + theirs, 20, "round {round}: each change applied once");
    }
    assert!(
        f.store
            .store
            .open_updates(&f.migration)
            .await
            .unwrap()
            .is_empty()
    );
    for id in 1..=20 {
        assert_eq!(f.note("acme", id).await.as_deref(), Some("r11"));
    }
}
