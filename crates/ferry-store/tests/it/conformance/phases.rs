//! Phase changes and the tenants per phase (`areas/phases.rs`): versions, conflicts, the counter,
//! and the progress a change resets.

use std::time::Duration;

use ferry_domain::{Action, Cohort, Guard, Phase, TenantPhase};
use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

use super::{advance, meta, migration_with_tenants, tenant};

both_stores!(
    changes_are_applied_with_audit_and_counter,
    concurrent_changes_have_exactly_one_winner,
    batched_changes_report_conflicts_per_tenant,
    status_counts_tenants_per_phase,
    rollback_resets_backfill_progress,
    entering_target_only_marks_the_source_stale,
    guards_are_rechecked_inside_the_write,
);

async fn changes_are_applied_with_audit_and_counter(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1)]).await;
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let mut change = advance(&a);
    change.forced_guards = vec![Guard::RoutersAcknowledged];
    let applied = s.store.apply_changes(&m, &[change], &meta()).await.unwrap();
    assert_eq!(applied.applied, [tenant("a")]);
    assert!(applied.conflicts.is_empty());
    assert_eq!(applied.change_version, 1);
    assert_eq!(s.store.change_version().await.unwrap(), 1);

    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    assert_eq!(a.state.phase, Phase::DualWrite);
    assert_eq!(a.state.version, 1);
    assert_eq!(a.changed_at_version, 1);
    // b was not touched.
    let b = s.store.tenant(&m, &tenant("b")).await.unwrap();
    assert_eq!(b.state, TenantPhase::INITIAL);

    let history = s.store.history(&m, &tenant("a")).await.unwrap();
    assert_eq!(history.len(), 1);
    let entry = &history[0];
    assert_eq!(
        (entry.action, entry.from_phase, entry.to_phase),
        (Action::Advance, Phase::Legacy, Phase::DualWrite)
    );
    assert_eq!(
        (entry.actor.as_str(), entry.reason.as_str()),
        ("alice", "test")
    );
    assert_eq!(entry.forced_guards, [Guard::RoutersAcknowledged]);
    assert!(entry.forced());
    assert_eq!(entry.change_version, 1);
    assert!(s.store.history(&m, &tenant("b")).await.unwrap().is_empty());
}

async fn concurrent_changes_have_exactly_one_winner(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1)]).await;
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    // Two operators read version 0 and both try to advance, from two connections.
    let other = s.reopen().await;
    let (change, meta) = ([advance(&a)], meta());
    let one = s.store.apply_changes(&m, &change, &meta);
    let two = other.apply_changes(&m, &change, &meta);
    let (one, two) = tokio::join!(one, two);
    let (one, two) = (one.unwrap(), two.unwrap());
    let winners = one.applied.len() + two.applied.len();
    let losers = one.conflicts.len() + two.conflicts.len();
    assert_eq!((winners, losers), (1, 1), "{one:?} {two:?}");
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    assert_eq!((a.state.phase, a.state.version), (Phase::DualWrite, 1));
    assert_eq!(s.store.history(&m, &tenant("a")).await.unwrap().len(), 1);
    // The loser's counter bump was rolled back with it.
    assert_eq!(s.store.change_version().await.unwrap(), 1);
}

async fn batched_changes_report_conflicts_per_tenant(s: &TestStore) {
    let names: Vec<String> = (0..50).map(|i| format!("t{i:02}")).collect();
    let tenants: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let m = migration_with_tenants(s, "m", &tenants).await;
    let all = s.store.cohort(&m, &Cohort::All).await.unwrap();
    assert_eq!(all.len(), 50);
    // t07 moves first, so the batch's expectation for it is stale.
    s.store
        .apply_changes(&m, &[advance(&all[7])], &meta())
        .await
        .unwrap();
    let batch: Vec<PhaseChange> = all.iter().map(advance).collect();
    let applied = s.store.apply_changes(&m, &batch, &meta()).await.unwrap();
    assert_eq!(applied.applied.len(), 49);
    assert_eq!(applied.conflicts, [tenant("t07")]);
    assert_eq!(applied.change_version, 2);
    let t07 = s.store.tenant(&m, &tenant("t07")).await.unwrap();
    assert_eq!(t07.state.phase, Phase::DualWrite, "not advanced twice");
    let log = s.store.audit_log(&m, 0, 1000).await.unwrap();
    assert_eq!(log.len(), 50);
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        log[1..].iter().filter(|e| e.change_version == 2).count(),
        49
    );
}

async fn status_counts_tenants_per_phase(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 10), ("b", 20), ("c", 30)]).await;
    migration_with_tenants(s, "n", &[("a", 1)]).await;
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let mut change = advance(&a);
    change.to_paused = true;
    s.store.apply_changes(&m, &[change], &meta()).await.unwrap();
    let status = s.store.status().await.unwrap();
    let rows: Vec<_> = status
        .iter()
        .map(|c| {
            (
                c.migration.to_string(),
                c.phase.as_str(),
                c.tenants,
                c.paused,
                c.rows,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("m".to_owned(), "legacy", 2, 0, 50),
            ("m".to_owned(), "dual_write", 1, 1, 10),
            ("n".to_owned(), "legacy", 1, 0, 1),
        ]
    );
}

async fn rollback_resets_backfill_progress(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 10)]).await;
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    s.store
        .apply_changes(&m, &[advance(&a)], &meta())
        .await
        .unwrap();
    s.store
        .record_backfill(&BackfillProgress {
            migration: m.clone(),
            tenant: tenant("a"),
            direction: CopyDirection::Forward,
            rows_done: 10,
            rows_total: 10,
            complete: true,
            last_key: None,
            batch_size: 0,
            rows_per_s: 0.0,
            throttled: None,
            updated_at: None,
            epoch: 0,
        })
        .await
        .unwrap();
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let rollback = PhaseChange {
        tenant: a.tenant.clone(),
        action: Action::Rollback,
        expected_version: a.state.version,
        from: a.state,
        to_phase: Phase::Legacy,
        to_paused: false,
        forced_guards: vec![],
        recheck_buffer: false,
        recheck_mismatches: false,
    };
    s.store
        .apply_changes(&m, &[rollback], &meta())
        .await
        .unwrap();
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let facts = s
        .store
        .guard_facts(&m, &[a], Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        !facts[0].backfill_complete,
        "a backfill from before the rollback must not count for the next attempt"
    );
}

async fn entering_target_only_marks_the_source_stale(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 10)]).await;
    let lease = Duration::from_secs(30);
    for _ in 0..4 {
        let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
        s.store
            .apply_changes(&m, &[advance(&a)], &meta())
            .await
            .unwrap();
    }
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    assert_eq!(a.state.phase, Phase::TargetOnly);
    let facts = s
        .store
        .guard_facts(&m, std::slice::from_ref(&a), lease)
        .await
        .unwrap();
    assert!(!facts[0].source_current);
    let mut reverse = BackfillProgress::new(m.clone(), tenant("a"), CopyDirection::Reverse);
    reverse.complete = true;
    // The reverse copy runs only once writes reach the source again (target_primary).
    assert!(matches!(
        s.store.record_backfill(&reverse).await.unwrap_err(),
        StoreError::ProgressOutOfPhase { .. }
    ));
    let back = PhaseChange {
        tenant: a.tenant.clone(),
        action: Action::Rollback,
        expected_version: a.state.version,
        from: a.state,
        to_phase: Phase::TargetPrimary,
        to_paused: false,
        forced_guards: vec![],
        recheck_buffer: false,
        recheck_mismatches: false,
    };
    s.store.apply_changes(&m, &[back], &meta()).await.unwrap();
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let facts = s
        .store
        .guard_facts(&m, std::slice::from_ref(&a), lease)
        .await
        .unwrap();
    assert!(
        !facts[0].source_current,
        "still stale until the reverse copy completes"
    );
    // Entering and leaving target_only each began a new copy epoch: a reverse copy from
    // before them is refused, one of the current epoch is recorded.
    assert_eq!(a.copy_epoch, 2);
    assert!(matches!(
        s.store.record_backfill(&reverse).await.unwrap_err(),
        StoreError::ProgressStale {
            epoch: 0,
            current: 2,
            ..
        }
    ));
    reverse.epoch = a.copy_epoch;
    s.store.record_backfill(&reverse).await.unwrap();
    let facts = s.store.guard_facts(&m, &[a], lease).await.unwrap();
    assert!(facts[0].source_current);
}

async fn guards_are_rechecked_inside_the_write(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1)]).await;
    let all = s.store.cohort(&m, &Cohort::All).await.unwrap();
    // Between the engine's reading of the facts and its write, a's target write failed and
    // went to the buffer.
    let seq = s
        .store
        .enqueue_update(&m, &tenant("a"), "k1", "update", &serde_json::json!({}))
        .await
        .unwrap();
    let changes: Vec<PhaseChange> = all
        .iter()
        .map(|r| PhaseChange {
            recheck_buffer: true,
            recheck_mismatches: true,
            ..advance(r)
        })
        .collect();
    let applied = s.store.apply_changes(&m, &changes, &meta()).await.unwrap();
    assert_eq!(applied.applied, [tenant("b")]);
    assert_eq!(applied.conflicts, [tenant("a")]);
    s.store.mark_update_applied(seq).await.unwrap();
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    s.store
        .record_mismatch(&m, &tenant("a"), "k2", "differs")
        .await
        .unwrap();
    let change = PhaseChange {
        recheck_buffer: true,
        recheck_mismatches: true,
        ..advance(&a)
    };
    let applied = s
        .store
        .apply_changes(&m, std::slice::from_ref(&change), &meta())
        .await
        .unwrap();
    assert_eq!(
        applied.conflicts,
        [tenant("a")],
        "an open mismatch stops it too"
    );
    // Without the recheck (a forced change) it goes through.
    let applied = s
        .store
        .apply_changes(
            &m,
            &[PhaseChange {
                recheck_buffer: false,
                recheck_mismatches: false,
                ..change
            }],
            &meta(),
        )
        .await
        .unwrap();
    assert_eq!(applied.applied, [tenant("a")]);
    // One change per tenant per batch.
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let err = s
        .store
        .apply_changes(&m, &[advance(&a), advance(&a)], &meta())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidRequest(_)), "{err}");
}
