//! The tenant move's buffer worker (issue 16): a target that goes away mid-move does not fail
//! the application's writes, the buffer-drained guard holds the tenant, and the worker drains
//! the buffer once the target is back, leaving the sides equal. A change the target refuses
//! counts attempts; an unreachable target counts none.

use std::sync::atomic::Ordering;

use ferry_domain::Phase;
use ferry_move::{BufferPass, MoveBuffer};
use ferry_testkit::FaultProxy;

use crate::fixture::{Fixture, fixture, row, through};

/// Why a non-forced advance of t1 is refused now (the test fixture's backfill is never
/// recorded, so one is always refused; what matters is whether the buffer is named).
async fn refusal(f: &Fixture) -> String {
    f.advance(false).await.unwrap_err().to_string()
}

fn counts(pass: &BufferPass) -> (u64, u64, u64) {
    (pass.applied, pass.failed, pass.unreachable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_while_the_target_is_down_and_the_buffer_drains_when_it_is_back() {
    let f = fixture().await;
    let proxy = FaultProxy::start(f.data.url()).await;
    let target = through(&proxy).await;
    let table = f.table_over(f.pool.clone(), target.clone()).await;
    // The worker reads both catalogues as it opens: it is started while the target is up.
    let worker = MoveBuffer::open(f.store.store.clone(), &f.m, f.pool.clone(), target).await;
    let worker = worker.unwrap();
    f.enter(Phase::Shadow).await;

    proxy.set_down(true).await;
    for id in 1..=5 {
        let note = format!("written while the target was down {id}");
        table
            .update(&f.t1, &[&id.to_string()], row(None, &note))
            .await
            .unwrap();
    }
    assert!(table.delete(&f.t1, &["6"]).await.unwrap());
    table
        .insert(&f.t1, row(Some(11), "inserted while down"))
        .await
        .unwrap();
    // Reads are served by the source, which has every write.
    let read = table.get(&f.t1, &["3"]).await.unwrap().unwrap();
    assert_eq!(read["note"], "written while the target was down 3");
    assert_eq!(table.stats.buffered.load(Ordering::Relaxed), 7);
    assert_ne!(f.rows("public").await, f.rows("moved").await);
    assert!(
        refusal(&f)
            .await
            .contains("update buffer not drained (7 pending)")
    );

    let pass = worker.apply(&f.t1).await.unwrap();
    assert_eq!(counts(&pass), (0, 0, 7), "{pass:?}");
    let parked = f.store.store.open_updates(&f.m).await.unwrap();
    assert!(
        parked
            .iter()
            .all(|u| u.attempts == 0 && u.state == "pending"),
        "{parked:?}"
    );

    proxy.set_down(false).await;
    let pass = worker.apply(&f.t1).await.unwrap();
    assert_eq!(counts(&pass), (7, 0, 0), "{pass:?}");
    assert!(f.store.store.open_updates(&f.m).await.unwrap().is_empty());
    assert_eq!(
        f.rows("public").await,
        f.rows("moved").await,
        "the sides differ"
    );
    assert!(!refusal(&f).await.contains("update buffer"));
    // Nothing is left: another pass does nothing.
    assert_eq!(counts(&worker.apply(&f.t1).await.unwrap()), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_target_refuses_counts_attempts_and_blocks_its_key() {
    let f = fixture().await;
    f.enter(Phase::DualWrite).await;
    f.fail_commits_on("moved").await;
    // The target's half fails at COMMIT (a deferred constraint): parked.
    let table = f.table_over(f.pool.clone(), f.pool.clone()).await;
    table
        .update(&f.t1, &["4"], row(None, "fail-at-commit"))
        .await
        .unwrap();
    table
        .update(&f.t1, &["5"], row(None, "fine"))
        .await
        .unwrap();
    assert_eq!(table.stats.buffered.load(Ordering::Relaxed), 1);

    let worker = MoveBuffer::open(f.store.store.clone(), &f.m, f.pool.clone(), f.pool.clone());
    let worker = worker.await.unwrap();
    let pass = worker.apply(&f.t1).await.unwrap();
    assert_eq!(counts(&pass), (0, 1, 0), "{pass:?}");
    assert!(pass.last_error.unwrap().contains("refused at commit"));
    let parked = f.store.store.open_updates(&f.m).await.unwrap();
    assert_eq!(
        (parked[0].attempts, parked[0].state.as_str()),
        (1, "pending")
    );
    // Ten refusals (the default buffer.dead_after) make it dead; the worker then leaves the
    // key alone until an operator retries or drops it.
    for _ in 0..9 {
        worker.apply(&f.t1).await.unwrap();
    }
    let parked = f.store.store.open_updates(&f.m).await.unwrap();
    assert_eq!((parked[0].attempts, parked[0].state.as_str()), (10, "dead"));
    assert_eq!(counts(&worker.apply(&f.t1).await.unwrap()), (0, 0, 0));
}
