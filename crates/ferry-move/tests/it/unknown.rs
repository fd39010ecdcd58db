//! An authoritative COMMIT whose answer is lost: the server committed, the client saw its
//! connection drop. A fault proxy between the table and one side drops exactly that answer.
//!
//! Before the fix the other side's half was rolled back as for a refused COMMIT and nothing
//! was recorded: in `shadow` the target kept the old row (the write lost once the target
//! became authoritative), in `target_primary` a deleted row lived on in the source (and came
//! back on a rollback). On that code the delete test failed on `the sides differ` and the
//! shadow test found no lost answer counted (0, not 2).

use std::sync::atomic::Ordering;

use ferry_copier::Copier;
use ferry_domain::Phase;
use ferry_engine::{EngineSettings, PhaseEngine};
use ferry_move::MoveError;
use ferry_store::CopyDirection;
use ferry_testkit::FaultProxy;

use crate::fixture::{Fixture, fixture, row, through};

/// The error of a write whose COMMIT answer the proxy dropped, checked for what it says.
fn assert_unknown<T: std::fmt::Debug>(written: Result<T, MoveError>) {
    match written {
        Err(e @ MoveError::CommitUnknown { .. }) => {
            let text = e.to_string();
            assert!(text.contains("may or may not have taken effect"), "{text}");
            assert!(text.contains("recorded as a mismatch"), "{text}");
        }
        other => panic!("expected CommitUnknown, got {other:?}"),
    }
}

async fn advance(f: &Fixture) -> Result<Phase, ferry_engine::EngineError> {
    f.advance(false).await.map(|moved| moved.to_phase)
}

/// `ferry verify` finds the sides equal and resolves the tenant's open mismatches.
async fn verify(f: &Fixture) {
    let copier = Copier::open(
        f.store.store.clone(),
        PhaseEngine::new(f.store.store.clone(), EngineSettings::default()),
        &f.m,
        f.pool.clone(),
        f.pool.clone(),
        true,
    )
    .await
    .unwrap();
    let diff = copier.verify(&f.t1, CopyDirection::Forward).await.unwrap();
    assert!(diff.is_empty(), "{diff:?}");
}

/// In `shadow` the source is authoritative: an update and an insert whose source COMMIT
/// answers are lost stand on both sides, and the tenant cannot reach `target_primary` until
/// `ferry verify` has looked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_in_shadow_leaves_the_sides_equal_and_blocks_the_flip() {
    let f = fixture().await;
    let proxy = FaultProxy::start(f.data.url()).await;
    let table = f.table_over(through(&proxy).await, f.pool.clone()).await;
    f.enter(Phase::Shadow).await;

    proxy.lose_next_commit_answer();
    assert_unknown(table.update(&f.t1, &["3"], row(None, "answer lost")).await);
    proxy.lose_next_commit_answer();
    assert_unknown(
        table
            .insert(&f.t1, row(Some(11), "inserted, answer lost"))
            .await,
    );
    assert_eq!(proxy.answers_lost(), 2);
    assert_eq!(table.stats.commits_unknown.load(Ordering::Relaxed), 2);

    let source = f.rows("public").await;
    assert_eq!(source, f.rows("moved").await, "the sides differ");
    assert_eq!(source[2].1.as_deref(), Some("answer lost"));
    assert_eq!(source[10].1.as_deref(), Some("inserted, answer lost"));

    let open = f.store.store.open_mismatches(&f.m, &f.t1).await.unwrap();
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(
        open.iter().all(|(_, _, d)| d.contains("lost its answer")),
        "{open:?}"
    );
    let refused = advance(&f).await.unwrap_err().to_string();
    assert!(refused.contains("mismatch"), "{refused}");

    verify(&f).await;
    assert!(
        f.store
            .store
            .open_mismatches(&f.m, &f.t1)
            .await
            .unwrap()
            .is_empty()
    );
    // The same table, whose pool lost two connections, keeps serving.
    table
        .update(&f.t1, &["4"], row(None, "after"))
        .await
        .unwrap();
    assert_eq!(f.rows("public").await, f.rows("moved").await);
}

/// In `target_primary` the target is authoritative: a delete whose target COMMIT answer is
/// lost took effect, so the source row goes too (else a rollback would bring it back), and
/// `target_only` waits for `ferry verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_of_a_delete_in_target_primary_resurrects_nothing() {
    let f = fixture().await;
    let proxy = FaultProxy::start(f.data.url()).await;
    let table = f.table_over(f.pool.clone(), through(&proxy).await).await;
    f.enter(Phase::TargetPrimary).await;

    proxy.lose_next_commit_answer();
    assert_unknown(table.delete(&f.t1, &["5"]).await);
    assert_eq!(proxy.answers_lost(), 1);

    let target = f.rows("moved").await;
    assert_eq!(target.len(), 9, "the delete took effect on the target");
    assert!(target.iter().all(|(id, _, _)| *id != 5));
    assert_eq!(f.rows("public").await, target, "the sides differ");

    let refused = advance(&f).await.unwrap_err().to_string();
    assert!(refused.contains("mismatch"), "{refused}");
    verify(&f).await;
    assert_eq!(advance(&f).await.unwrap(), Phase::TargetOnly);
}

/// In `legacy` (and `target_only`, `complete`) one side is written: a COMMIT whose answer is
/// lost there took effect too, so the request must fail as of unknown outcome, not as a
/// refusal (a client told "refused" may rely on nothing having changed). Before the fix this
/// was `MoveError::Write`: the workload's checker, which now holds refused writes to having
/// changed nothing, would have counted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_commit_answer_of_a_one_sided_write_is_of_unknown_outcome() {
    let f = fixture().await;
    let proxy = FaultProxy::start(f.data.url()).await;
    let table = f.table_over(through(&proxy).await, f.pool.clone()).await;

    proxy.lose_next_commit_answer();
    let written = table.update(&f.t1, &["3"], row(None, "answer lost")).await;
    assert_eq!(proxy.answers_lost(), 1);
    match written {
        Err(e @ MoveError::CommitUnknown { .. }) => {
            let text = e.to_string();
            assert!(text.contains("may or may not have taken effect"), "{text}");
        }
        other => panic!("expected CommitUnknown, got {other:?}"),
    }
    assert_eq!(f.note("public", 3).await, Some(Some("answer lost".into())));
    assert!(
        f.store
            .store
            .open_mismatches(&f.m, &f.t1)
            .await
            .unwrap()
            .is_empty(),
        "one side only: nothing to record"
    );
}

/// A connection reset while the target (authoritative in `target_primary`) is still
/// committing: the client's COMMIT fails at once, and the insert lands a moment later. The key
/// must be levelled from the landed outcome (the row on both sides), not from a read made
/// while the insert was still invisible. (This passes with or without the wait for
/// transactions in flight that `commit_unknown` now makes: the levelling's own locks already
/// serialize it behind this commit here. It guards the behaviour, not that wait.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_still_landing_after_a_reset_is_levelled_once_it_has() {
    let f = fixture().await;
    let proxy = FaultProxy::start(f.data.url()).await;
    let table = f.table_over(f.pool.clone(), through(&proxy).await).await;
    f.enter(Phase::TargetPrimary).await;
    // The target's COMMIT of a row noted 'slow-commit' takes a second (a deferred trigger).
    sqlx::raw_sql(
        "CREATE FUNCTION moved.slow() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.note = 'slow-commit' THEN PERFORM pg_sleep(1); END IF;
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON moved.orders
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION moved.slow();",
    )
    .execute(&f.pool)
    .await
    .unwrap();
    let insert = {
        let (table, t1) = (std::sync::Arc::new(table), f.t1.clone());
        tokio::spawn(async move { table.insert(&t1, row(Some(12), "slow-commit")).await })
    };
    crate::fixture::until("the target commits slowly", async || {
        sqlx::query_scalar::<_, bool>(
            "SELECT exists (SELECT 1 FROM pg_stat_activity
                            WHERE datname = current_database() AND wait_event = 'PgSleep')",
        )
        .fetch_one(&f.pool)
        .await
        .unwrap()
    })
    .await;
    proxy.reset_all().await;
    match insert.await.unwrap() {
        Err(MoveError::CommitUnknown { .. }) => {}
        other => panic!("expected CommitUnknown, got {other:?}"),
    }
    let source = f.rows("public").await;
    assert!(
        source.iter().any(|(id, _, _)| *id == 12),
        "the insert landed"
    );
    assert_eq!(source, f.rows("moved").await, "the sides differ");
}
