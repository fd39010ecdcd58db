use std::collections::HashSet;
use std::time::Duration;

use ferry_domain::{
    Action, Cohort, Guard, MigrationId, Percent, Phase, RouterId, TenantId, TenantPhase,
};
use ferry_store::*;
use ferry_testkit::{TestStore, both_stores};

fn mig(s: &str) -> MigrationId {
    MigrationId::new(s).unwrap()
}
fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}
fn router(s: &str) -> RouterId {
    RouterId::new(s).unwrap()
}
fn meta() -> AuditMeta {
    AuditMeta {
        actor: "alice".into(),
        reason: "test".into(),
    }
}

async fn migration_with_tenants(s: &TestStore, id: &str, tenants: &[(&str, u64)]) -> MigrationId {
    let m = mig(id);
    s.store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::TenantMove,
            description: "move".into(),
            config: serde_json::json!({"table": "orders"}),
            created_by: "alice".into(),
        })
        .await
        .unwrap();
    let sizes: Vec<TenantSize> = tenants
        .iter()
        .map(|(t, rows)| TenantSize {
            tenant: tenant(t),
            rows: *rows,
        })
        .collect();
    s.store.register_tenants(&m, &sizes).await.unwrap();
    m
}

fn advance(record: &TenantRecord) -> PhaseChange {
    let to = record.state.phase.next().unwrap();
    PhaseChange {
        tenant: record.tenant.clone(),
        action: Action::Advance,
        expected_version: record.state.version,
        from: record.state,
        to_phase: to,
        to_paused: record.state.paused,
        forced_guards: vec![],
        recheck_clean: false,
    }
}

both_stores!(
    schema_is_versioned_and_reopening_is_idempotent,
    migrations_are_created_once_and_listed,
    tenants_register_in_legacy_and_update_sizes,
    unknown_things_are_clear_errors,
    changes_are_applied_with_audit_and_counter,
    concurrent_changes_have_exactly_one_winner,
    batched_changes_report_conflicts_per_tenant,
    cohorts_select_by_list_percent_and_size,
    guard_facts_come_from_progress_mismatches_buffer_and_routers,
    rollback_resets_backfill_progress,
    routers_heartbeat_and_follow_changes,
    status_counts_tenants_per_phase,
    audit_log_is_append_only,
    tenants_list_filters_and_paginates,
    progress_is_a_checkpoint_and_controls_merge,
    entering_target_only_marks_the_source_stale,
    guards_are_rechecked_inside_the_write,
    segment_commits_are_atomic_and_exclusive,
    the_update_buffer_retries_then_parks_changes,
    health_sums_the_buffer_and_mismatches,
    tokens_are_unique_and_revocable,
    the_operator_log_is_append_only_and_pages,
    route_counts_are_replaced_per_router,
    recent_audit_is_the_newest_entries_oldest_first,
    control_changes_touch_only_their_columns,
);

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
            recheck_clean: true,
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
        recheck_clean: true,
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
                recheck_clean: false,
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

async fn progress_is_a_checkpoint_and_controls_merge(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 100), ("b", 5)]).await;
    assert!(s.store.progress(&m, None).await.unwrap().is_empty());
    let mut p = BackfillProgress::new(m.clone(), tenant("a"), CopyDirection::Forward);
    // In legacy no copy runs: progress from a stray copier is refused.
    let err = s.store.record_backfill(&p).await.unwrap_err();
    assert!(
        matches!(err, StoreError::ProgressOutOfPhase { .. }),
        "{err}"
    );
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    s.store
        .apply_changes(&m, &[advance(&a)], &meta())
        .await
        .unwrap();
    p.last_key = Some(vec!["a".into(), "42".into()]);
    p.rows_done = 40;
    p.rows_total = 100;
    p.batch_size = 500;
    p.rows_per_s = 1234.5;
    p.throttled = Some("replication lag 6.0s > 5.0s".into());
    s.store.record_backfill(&p).await.unwrap();
    let got = s.store.progress(&m, Some(&tenant("a"))).await.unwrap();
    assert_eq!(got.len(), 1);
    let got = &got[0];
    assert_eq!(got.last_key, p.last_key);
    assert_eq!(
        (got.rows_done, got.rows_total, got.batch_size),
        (40, 100, 500)
    );
    assert!((got.rows_per_s - 1234.5).abs() < 1e-9);
    assert_eq!(got.throttled, p.throttled);
    assert!(got.updated_at.is_some());
    assert!(
        s.store
            .progress(&m, Some(&tenant("b")))
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        s.store.control(&m, Some(&tenant("a"))).await.unwrap(),
        CopyControl::default()
    );
    s.store
        .set_control(
            &m,
            None,
            CopyControl {
                rate_limit: Some(1000),
                ..CopyControl::default()
            },
        )
        .await
        .unwrap();
    s.store
        .set_control(
            &m,
            Some(&tenant("a")),
            CopyControl {
                paused: true,
                rate_limit: Some(200),
                ..CopyControl::default()
            },
        )
        .await
        .unwrap();
    let a = s.store.control(&m, Some(&tenant("a"))).await.unwrap();
    assert_eq!(
        a,
        CopyControl {
            paused: true,
            cancelled: false,
            rate_limit: Some(200)
        }
    );
    let b = s.store.control(&m, Some(&tenant("b"))).await.unwrap();
    assert_eq!(
        b,
        CopyControl {
            paused: false,
            cancelled: false,
            rate_limit: Some(1000)
        }
    );
    let err = s
        .store
        .set_control(&m, Some(&tenant("ghost")), CopyControl::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TenantNotFound { .. }), "{err}");
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
        recheck_clean: false,
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
    s.store.record_backfill(&reverse).await.unwrap();
    let facts = s.store.guard_facts(&m, &[a], lease).await.unwrap();
    assert!(facts[0].source_current);
}

async fn schema_is_versioned_and_reopening_is_idempotent(s: &TestStore) {
    let m = migration_with_tenants(s, "m1", &[("a", 1)]).await;
    // A second process opening the same store neither fails nor loses data.
    let again = s.reopen().await;
    assert_eq!(again.migration(&m).await.unwrap().id, m);
    assert_eq!(again.change_version().await.unwrap(), 0);
}

async fn migrations_are_created_once_and_listed(s: &TestStore) {
    let m = migration_with_tenants(s, "orders_move", &[]).await;
    let got = s.store.migration(&m).await.unwrap();
    assert_eq!(got.kind, MigrationKind::TenantMove);
    assert_eq!(got.config, serde_json::json!({"table": "orders"}));
    assert_eq!(got.created_by, "alice");
    let dup = s
        .store
        .create_migration(&NewMigration {
            id: m.clone(),
            kind: MigrationKind::Tiering,
            description: String::new(),
            config: serde_json::json!({}),
            created_by: "bob".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(dup, StoreError::MigrationExists(ref id) if *id == m),
        "{dup}"
    );
    // The refused duplicate changed nothing.
    assert_eq!(
        s.store.migration(&m).await.unwrap().kind,
        MigrationKind::TenantMove
    );
    migration_with_tenants(s, "a_first", &[]).await;
    let ids: Vec<String> = s
        .store
        .migrations()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(ids, ["a_first", "orders_move"]);
}

async fn tenants_register_in_legacy_and_update_sizes(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 10), ("b", 20)]).await;
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    assert_eq!(a.state, TenantPhase::INITIAL);
    assert_eq!(a.rows, 10);
    assert_eq!(a.cohort_bucket, ferry_domain::hash_bucket(&m, &tenant("a")));
    let added = s
        .store
        .register_tenants(
            &m,
            &[
                TenantSize {
                    tenant: tenant("a"),
                    rows: 11,
                },
                TenantSize {
                    tenant: tenant("c"),
                    rows: 5,
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(added, 1, "only c is new");
    // Duplicates within one registration: the last one wins, on both stores.
    let dup = |rows| TenantSize {
        tenant: tenant("d"),
        rows,
    };
    let added = s
        .store
        .register_tenants(&m, &[dup(1), dup(2), dup(3)])
        .await
        .unwrap();
    assert_eq!(added, 1);
    assert_eq!(s.store.tenant(&m, &tenant("d")).await.unwrap().rows, 3);
    assert_eq!(s.store.tenant(&m, &tenant("a")).await.unwrap().rows, 11);
    assert_eq!(s.store.tenant(&m, &tenant("c")).await.unwrap().rows, 5);
}

async fn unknown_things_are_clear_errors(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1)]).await;
    let err = s.store.migration(&mig("nope")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "migration nope does not exist (see `ferry migration list`)"
    );
    let err = s.store.tenant(&m, &tenant("zz")).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "tenant zz is not registered in migration m (see `ferry tenant add`)"
    );
    let err = s
        .store
        .tenant(&mig("nope"), &tenant("a"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MigrationNotFound(_)), "{err}");
    let err = s
        .store
        .register_tenants(
            &mig("nope"),
            &[TenantSize {
                tenant: tenant("a"),
                rows: 1,
            }],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::MigrationNotFound(_)), "{err}");
    assert!(matches!(
        s.store.history(&m, &tenant("zz")).await.unwrap_err(),
        StoreError::TenantNotFound { .. }
    ));
}

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

async fn cohorts_select_by_list_percent_and_size(s: &TestStore) {
    let names: Vec<String> = (0..2000).map(|i| format!("tenant-{i}")).collect();
    let tenants: Vec<(&str, u64)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), ((i * 7919) % 2000) as u64))
        .collect();
    let m = migration_with_tenants(s, "m", &tenants).await;

    let listed = s
        .store
        .cohort(
            &m,
            &Cohort::Explicit(vec![
                tenant("tenant-5"),
                tenant("tenant-9"),
                tenant("ghost"),
            ]),
        )
        .await
        .unwrap();
    let ids: Vec<_> = listed.iter().map(|t| t.tenant.to_string()).collect();
    assert_eq!(ids, ["tenant-5", "tenant-9"], "unknown tenants are absent");

    let ten = s
        .store
        .cohort(&m, &Cohort::Percent(Percent::parse("10").unwrap()))
        .await
        .unwrap();
    let twenty = s
        .store
        .cohort(&m, &Cohort::Percent(Percent::parse("20").unwrap()))
        .await
        .unwrap();
    assert!((150..=250).contains(&ten.len()), "{} in 10%", ten.len());
    let ten_ids: HashSet<_> = ten.iter().map(|t| t.tenant.clone()).collect();
    let twenty_ids: HashSet<_> = twenty.iter().map(|t| t.tenant.clone()).collect();
    assert!(ten_ids.is_subset(&twenty_ids), "widening keeps the canary");
    let again = s
        .store
        .cohort(&m, &Cohort::Percent(Percent::parse("10").unwrap()))
        .await
        .unwrap();
    assert_eq!(ten, again, "stable");
    for t in &ten {
        assert_eq!(t.cohort_bucket, ferry_domain::hash_bucket(&m, &t.tenant));
        assert!(t.cohort_bucket < 1000);
    }

    let smallest = s.store.cohort(&m, &Cohort::SmallestFirst(3)).await.unwrap();
    let sizes: Vec<u64> = smallest.iter().map(|t| t.rows).collect();
    assert_eq!(sizes, [0, 1, 2]);
}

async fn guard_facts_come_from_progress_mismatches_buffer_and_routers(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 100), ("b", 100)]).await;
    // Move a first (the copier reports progress only in dual_write and shadow), so that its
    // changed_at_version (1) is ahead of app-1's acknowledgement (0).
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
            rows_done: 40,
            rows_total: 100,
            complete: false,
            last_key: None,
            batch_size: 0,
            rows_per_s: 0.0,
            throttled: None,
            updated_at: None,
        })
        .await
        .unwrap();
    let mismatch = s
        .store
        .record_mismatch(&m, &tenant("a"), "order:17", "amount differs")
        .await
        .unwrap();
    let seq = s
        .store
        .enqueue_update(
            &m,
            &tenant("a"),
            "order:17",
            "update",
            &serde_json::json!({"amount": 5}),
        )
        .await
        .unwrap();
    s.store
        .heartbeat(&router("app-1"), "test", 0)
        .await
        .unwrap();

    let records = vec![
        s.store.tenant(&m, &tenant("a")).await.unwrap(),
        s.store.tenant(&m, &tenant("b")).await.unwrap(),
    ];
    let lease = Duration::from_secs(30);
    let facts = s.store.guard_facts(&m, &records, lease).await.unwrap();
    assert_eq!(facts.len(), 2);
    let a = &facts[0];
    assert!(!a.backfill_complete);
    assert_eq!((a.backfill_rows_done, a.backfill_rows_total), (40, 100));
    assert_eq!(a.unresolved_mismatches, 1);
    assert_eq!(a.buffer_depth, 1);
    assert_eq!(a.lagging_routers, ["app-1"]);
    let b = &facts[1];
    assert_eq!(b.unresolved_mismatches, 0);
    assert_eq!(b.buffer_depth, 0);
    assert!(
        b.lagging_routers.is_empty(),
        "b never changed: nothing to acknowledge"
    );

    s.store.resolve_mismatch(mismatch).await.unwrap();
    s.store.mark_update_applied(seq).await.unwrap();
    s.store
        .heartbeat(&router("app-1"), "test", 1)
        .await
        .unwrap();
    s.store
        .record_backfill(&BackfillProgress {
            migration: m.clone(),
            tenant: tenant("a"),
            direction: CopyDirection::Forward,
            rows_done: 100,
            rows_total: 100,
            complete: true,
            last_key: None,
            batch_size: 0,
            rows_per_s: 0.0,
            throttled: None,
            updated_at: None,
        })
        .await
        .unwrap();
    let facts = s.store.guard_facts(&m, &records[..1], lease).await.unwrap();
    let a = &facts[0];
    assert!(a.backfill_complete);
    assert_eq!((a.unresolved_mismatches, a.buffer_depth), (0, 0));
    assert!(a.lagging_routers.is_empty());
    assert!(
        a.source_current,
        "never in target_only: the source is current"
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
        recheck_clean: false,
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

async fn routers_heartbeat_and_follow_changes(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1)]).await;
    s.store
        .heartbeat(&router("app-1"), "pid 1", 0)
        .await
        .unwrap();
    s.store
        .heartbeat(&router("app-2"), "pid 2", 0)
        .await
        .unwrap();
    // A late heartbeat never moves an acknowledgement back.
    s.store
        .heartbeat(&router("app-2"), "pid 2", 5)
        .await
        .unwrap();
    s.store
        .heartbeat(&router("app-2"), "pid 2", 3)
        .await
        .unwrap();
    let routers = s.store.routers(Duration::from_secs(30)).await.unwrap();
    let seen: Vec<_> = routers
        .iter()
        .map(|r| (r.id.to_string(), r.seen_version, r.live))
        .collect();
    assert_eq!(
        seen,
        [("app-1".to_owned(), 0, true), ("app-2".to_owned(), 5, true)]
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let routers = s.store.routers(Duration::from_millis(1)).await.unwrap();
    assert!(
        routers.iter().all(|r| !r.live),
        "past the lease a router is dead"
    );
    s.store.deregister_router(&router("app-1")).await.unwrap();
    assert_eq!(
        s.store
            .routers(Duration::from_secs(30))
            .await
            .unwrap()
            .len(),
        1
    );

    // A fresh router loads only non-default tenants; then follows increments.
    assert!(s.store.changes_since(0).await.unwrap().is_empty());
    let mut feed = s.store.change_feed();
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let applied = s
        .store
        .apply_changes(&m, &[advance(&a)], &meta())
        .await
        .unwrap();
    let observed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match feed.changed().await {
                Some(v) if v >= applied.change_version => return v,
                Some(_) => continue,
                None => panic!("feed ended"),
            }
        }
    })
    .await
    .expect("the feed reports a committed change within 10 s");
    assert_eq!(observed, applied.change_version);
    let changed = s.store.changes_since(0).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].state.phase, Phase::DualWrite);
    assert!(
        s.store
            .changes_since(applied.change_version)
            .await
            .unwrap()
            .is_empty()
    );
    // Rolled back to legacy: an incremental reader must still learn of it.
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    let back = PhaseChange {
        tenant: a.tenant.clone(),
        action: Action::Rollback,
        expected_version: a.state.version,
        from: a.state,
        to_phase: Phase::Legacy,
        to_paused: false,
        forced_guards: vec![],
        recheck_clean: false,
    };
    s.store.apply_changes(&m, &[back], &meta()).await.unwrap();
    let changed = s.store.changes_since(applied.change_version).await.unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].state.phase, Phase::Legacy);
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

async fn audit_log_is_append_only(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1)]).await;
    let a = s.store.tenant(&m, &tenant("a")).await.unwrap();
    s.store
        .apply_changes(&m, &[advance(&a)], &meta())
        .await
        .unwrap();
    let refused = match s.store.kind() {
        StoreKind::Postgres => {
            let pg = sqlx::PgPool::connect(&s.url).await.unwrap();
            let update = sqlx::query("UPDATE ferry.ferry_audit_log SET actor = 'mallory'")
                .execute(&pg)
                .await;
            let delete = sqlx::query("DELETE FROM ferry.ferry_audit_log")
                .execute(&pg)
                .await;
            pg.close().await;
            update.is_err() && delete.is_err()
        }
        StoreKind::Sqlite => {
            let path = s.url.trim_start_matches("sqlite://");
            let db = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            let update = sqlx::query("UPDATE ferry_audit_log SET actor = 'mallory'")
                .execute(&db)
                .await;
            let delete = sqlx::query("DELETE FROM ferry_audit_log")
                .execute(&db)
                .await;
            db.close().await;
            update.is_err() && delete.is_err()
        }
    };
    assert!(refused, "audit log rows must not be updated or deleted");
    let history = s.store.history(&m, &tenant("a")).await.unwrap();
    assert_eq!(history[0].actor, "alice");
}

async fn tenants_list_filters_and_paginates(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1), ("c", 1), ("d", 1)]).await;
    let b = s.store.tenant(&m, &tenant("b")).await.unwrap();
    s.store
        .apply_changes(&m, &[advance(&b)], &meta())
        .await
        .unwrap();
    let ids = |v: Vec<TenantRecord>| -> Vec<String> {
        v.into_iter().map(|t| t.tenant.to_string()).collect()
    };
    let legacy = s
        .store
        .tenants(
            &m,
            &TenantQuery {
                phase: Some(Phase::Legacy),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(legacy), ["a", "c", "d"]);
    let page = s
        .store
        .tenants(
            &m,
            &TenantQuery {
                after: Some(tenant("a")),
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(page), ["b", "c"]);
}

fn new_segment(id: i64, min: i64, max: i64) -> NewSegment {
    NewSegment {
        id,
        path: format!("m/a/{id}.parquet"),
        rows: (max - min + 1) as u64,
        min_key: format!("[{min}]"),
        max_key: format!("[{max}]"),
        checksum: "c".repeat(64),
    }
}

async fn segment_commits_are_atomic_and_exclusive(s: &TestStore) {
    let m = migration_with_tenants(s, "tier", &[("a", 1), ("b", 1)]).await;
    let (a, b) = (tenant("a"), tenant("b"));
    let first = s.store.reserve_segment(&m, &a).await.unwrap();
    let seq = s
        .store
        .enqueue_update(&m, &a, "[5]", "update", &serde_json::json!({"id": 5}))
        .await
        .unwrap();
    s.store
        .commit_segments(
            &m,
            &a,
            &SegmentCommit {
                add: vec![new_segment(first, 1, 100)],
                archived_through: Some("2026-01-01T00:00:00Z".into()),
                ..SegmentCommit::default()
            },
        )
        .await
        .unwrap();
    let live = s.store.segments(&m, &a).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].id, live[0].rows, live[0].min_key.as_str()),
        (first, 100, "[1]")
    );
    assert!(
        s.store.segments(&m, &b).await.unwrap().is_empty(),
        "per tenant"
    );
    assert_eq!(
        s.store.archived_through(&m, &a).await.unwrap().as_deref(),
        Some("2026-01-01T00:00:00Z")
    );
    assert_eq!(s.store.archived_through(&m, &b).await.unwrap(), None);

    // Two workers rewrite the same segment: one swap wins, the other changes nothing.
    let (x, y) = (
        s.store.reserve_segment(&m, &a).await.unwrap(),
        s.store.reserve_segment(&m, &a).await.unwrap(),
    );
    let swap = |id: i64| SegmentCommit {
        add: vec![new_segment(id, 1, 100)],
        retire: vec![first],
        applied: vec![seq],
        archived_through: None,
    };
    s.store.commit_segments(&m, &a, &swap(x)).await.unwrap();
    let lost = s.store.commit_segments(&m, &a, &swap(y)).await.unwrap_err();
    assert!(matches!(lost, StoreError::Conflict { .. }), "{lost}");
    let live = s.store.segments(&m, &a).await.unwrap();
    assert_eq!(live.iter().map(|s| s.id).collect::<Vec<_>>(), [x]);
    assert!(s.store.pending_updates(&m, &a).await.unwrap().is_empty());
    // The retired segment is garbage now; the losing reservation once it is stale.
    let garbage: Vec<i64> = s
        .store
        .garbage_segments(&m, Duration::from_secs(3600))
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(garbage, [first]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let garbage: Vec<i64> = s
        .store
        .garbage_segments(&m, Duration::from_millis(1))
        .await
        .unwrap()
        .iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(garbage, [first, y]);
    s.store.forget_segment(first).await.unwrap();
    s.store.forget_segment(x).await.unwrap(); // live: not forgotten
    assert_eq!(s.store.segments(&m, &a).await.unwrap().len(), 1);
    // A segment must have been reserved for this tenant.
    let other = s.store.reserve_segment(&m, &b).await.unwrap();
    let wrong = SegmentCommit {
        add: vec![new_segment(other, 1, 2)],
        ..SegmentCommit::default()
    };
    assert!(s.store.commit_segments(&m, &a, &wrong).await.is_err());
    assert!(s.store.segments(&m, &b).await.unwrap().is_empty());
}

async fn the_update_buffer_retries_then_parks_changes(s: &TestStore) {
    let m = migration_with_tenants(s, "buf", &[("a", 1), ("b", 1)]).await;
    let (a, b) = (tenant("a"), tenant("b"));
    let mut seqs = Vec::new();
    for (t, k) in [(&a, "[1]"), (&b, "[1]"), (&a, "[2]"), (&a, "[1]")] {
        seqs.push(
            s.store
                .enqueue_update(&m, t, k, "update", &serde_json::json!({"k": k}))
                .await
                .unwrap(),
        );
    }
    let pending = s.store.pending_updates(&m, &a).await.unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|u| (u.seq, u.key.as_str()))
            .collect::<Vec<_>>(),
        [(seqs[0], "[1]"), (seqs[2], "[2]"), (seqs[3], "[1]")],
        "per tenant, in sequence order"
    );
    assert_eq!(pending[0].payload, serde_json::json!({"k": "[1]"}));
    for _ in 0..2 {
        s.store
            .record_update_failure(&[seqs[0], seqs[2]], "object store down", 3)
            .await
            .unwrap();
    }
    assert_eq!(
        s.store.pending_updates(&m, &a).await.unwrap()[0].attempts,
        2
    );
    s.store
        .record_update_failure(&[seqs[0]], "object store down", 3)
        .await
        .unwrap();
    let open = s.store.open_updates(&m).await.unwrap();
    let dead: Vec<i64> = open
        .iter()
        .filter(|u| u.state == "dead")
        .map(|u| u.seq)
        .collect();
    assert_eq!(dead, [seqs[0]]);
    assert_eq!(open.len(), 4);
    assert_eq!(open[0].last_error.as_deref(), Some("object store down"));
    assert!(s.store.retry_update(seqs[0]).await.unwrap());
    assert!(
        !s.store.retry_update(seqs[0]).await.unwrap(),
        "no longer dead"
    );
    let again = s.store.pending_updates(&m, &a).await.unwrap();
    assert_eq!((again[0].seq, again[0].attempts), (seqs[0], 0));
    // An operator gives up on one: it leaves the buffer, the note stays on it.
    assert!(
        s.store
            .drop_update(seqs[2], "dropped by alice: bad row")
            .await
            .unwrap()
    );
    assert!(!s.store.drop_update(seqs[2], "again").await.unwrap());
    let open = s.store.open_updates(&m).await.unwrap();
    assert!(open.iter().all(|u| u.seq != seqs[2]));
}

async fn health_sums_the_buffer_and_mismatches(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1)]).await;
    let other = migration_with_tenants(s, "other", &[("a", 1)]).await;
    assert_eq!(
        s.store.migration_health(&m).await.unwrap(),
        MigrationHealth::default()
    );
    let mut seqs = vec![];
    for (t, key) in [("a", "k1"), ("a", "k2"), ("b", "k1")] {
        seqs.push(
            s.store
                .enqueue_update(&m, &tenant(t), key, "update", &serde_json::json!({}))
                .await
                .unwrap(),
        );
    }
    s.store
        .enqueue_update(&other, &tenant("a"), "k", "update", &serde_json::json!({}))
        .await
        .unwrap();
    s.store
        .record_update_failure(&[seqs[0]], "down", 2)
        .await
        .unwrap();
    s.store
        .record_update_failure(&[seqs[0], seqs[1]], "down", 2)
        .await
        .unwrap();
    s.store.mark_update_applied(seqs[2]).await.unwrap();
    let id = s
        .store
        .record_mismatch(&m, &tenant("a"), "k1", "differs")
        .await
        .unwrap();
    s.store
        .record_mismatch(&m, &tenant("b"), "k9", "missing")
        .await
        .unwrap();
    s.store.resolve_mismatch(id).await.unwrap();
    let h = s.store.migration_health(&m).await.unwrap();
    assert_eq!(
        (
            h.buffer_pending,
            h.buffer_dead,
            h.buffer_retrying,
            h.buffer_attempts
        ),
        (1, 1, 1, 3),
        "{h:?}"
    );
    assert!(h.buffer_oldest_pending_at.is_some());
    assert_eq!((h.mismatches_open, h.mismatches_total), (1, 2));
}

async fn tokens_are_unique_and_revocable(s: &TestStore) {
    let new = |name: &str, scope, hash: &str| NewToken {
        name: name.into(),
        scope,
        sha256: hash.into(),
        created_by: "alice".into(),
    };
    let t = s
        .store
        .create_token(&new("grafana", TokenScope::Read, "aa"))
        .await
        .unwrap();
    assert_eq!((t.scope, t.revoked_at), (TokenScope::Read, None));
    s.store
        .create_token(&new("oncall", TokenScope::Operator, "bb"))
        .await
        .unwrap();
    let err = s
        .store
        .create_token(&new("grafana", TokenScope::Operator, "cc"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(s.store.revoke_token("grafana").await.unwrap());
    assert!(!s.store.revoke_token("grafana").await.unwrap());
    assert!(!s.store.revoke_token("nobody").await.unwrap());
    let all = s.store.tokens().await.unwrap();
    let names: Vec<(&str, bool)> = all
        .iter()
        .map(|t| (t.name.as_str(), t.revoked_at.is_some()))
        .collect();
    assert_eq!(names, [("grafana", true), ("oncall", false)]);
    assert_eq!(all[1].sha256, "bb");
}

async fn the_operator_log_is_append_only_and_pages(s: &TestStore) {
    for i in 1..=5 {
        s.store
            .record_operation(&NewOperation {
                actor: "token:oncall".into(),
                operation: "advance".into(),
                target: format!("m/t{i}"),
                outcome: "ok".into(),
            })
            .await
            .unwrap();
    }
    let recent = s.store.operations(0, 2).await.unwrap();
    let targets: Vec<&str> = recent.iter().map(|o| o.target.as_str()).collect();
    assert_eq!(targets, ["m/t4", "m/t5"], "the most recent, oldest first");
    let next = s.store.operations(recent[0].seq - 3, 2).await.unwrap();
    let targets: Vec<&str> = next.iter().map(|o| o.target.as_str()).collect();
    assert_eq!(targets, ["m/t2", "m/t3"]);
    let refused = match s.store.kind() {
        StoreKind::Postgres => {
            let pg = sqlx::PgPool::connect(&s.url).await.unwrap();
            let delete = sqlx::query("DELETE FROM ferry.ferry_operator_log")
                .execute(&pg)
                .await;
            pg.close().await;
            delete.is_err()
        }
        StoreKind::Sqlite => {
            let path = s.url.trim_start_matches("sqlite://");
            let db = sqlx::SqlitePool::connect(&format!("sqlite://{path}"))
                .await
                .unwrap();
            let delete = sqlx::query("DELETE FROM ferry_operator_log")
                .execute(&db)
                .await;
            db.close().await;
            delete.is_err()
        }
    };
    assert!(refused, "operator log rows must not be deleted");
    assert_eq!(s.store.operations(0, 100).await.unwrap().len(), 5);
}

async fn route_counts_are_replaced_per_router(s: &TestStore) {
    let count = |path: &str, n| RouteCount {
        migration: "m".into(),
        operation: "read".into(),
        phase: "shadow".into(),
        path: path.into(),
        reason: "phase".into(),
        count: n,
    };
    let (r1, r2) = (router("app-1"), router("app-2"));
    s.store.heartbeat(&r1, "app", 0).await.unwrap();
    s.store.heartbeat(&r2, "app", 0).await.unwrap();
    s.store
        .record_route_counts(&r1, &[count("source", 3)])
        .await
        .unwrap();
    s.store
        .record_route_counts(&r1, &[count("source", 5), count("target", 1)])
        .await
        .unwrap();
    s.store
        .record_route_counts(&r2, &[count("source", 7)])
        .await
        .unwrap();
    let all = s.store.route_counts().await.unwrap();
    let flat: Vec<(&str, &str, u64)> = all
        .iter()
        .map(|(r, c)| (r.as_str(), c.path.as_str(), c.count))
        .collect();
    assert_eq!(
        flat,
        [
            ("app-1", "source", 5),
            ("app-1", "target", 1),
            ("app-2", "source", 7)
        ]
    );
    s.store.deregister_router(&r1).await.unwrap();
    let all = s.store.route_counts().await.unwrap();
    assert_eq!(all.len(), 1, "a router's counts leave with it");
}

async fn recent_audit_is_the_newest_entries_oldest_first(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1), ("b", 1), ("c", 1)]).await;
    let other = migration_with_tenants(s, "other", &[("a", 1)]).await;
    for id in ["a", "b", "c"] {
        let t = s.store.tenant(&m, &tenant(id)).await.unwrap();
        s.store
            .apply_changes(&m, &[advance(&t)], &meta())
            .await
            .unwrap();
    }
    let o = s.store.tenant(&other, &tenant("a")).await.unwrap();
    s.store
        .apply_changes(&other, &[advance(&o)], &meta())
        .await
        .unwrap();
    let recent = s.store.recent_audit(&m, 2).await.unwrap();
    let tenants: Vec<&str> = recent.iter().map(|e| e.tenant.as_str()).collect();
    assert_eq!(tenants, ["b", "c"]);
    assert!(recent[0].seq < recent[1].seq);
    assert_eq!(s.store.recent_audit(&m, 10).await.unwrap().len(), 3);
}

async fn control_changes_touch_only_their_columns(s: &TestStore) {
    let m = migration_with_tenants(s, "m", &[("a", 1)]).await;
    let a = tenant("a");
    let throttle = ControlChange {
        rate_limit: Some(Some(500)),
        ..ControlChange::default()
    };
    let pause = ControlChange {
        paused: Some(true),
        ..ControlChange::default()
    };
    let c = s
        .store
        .change_control(&m, Some(&a), throttle)
        .await
        .unwrap();
    assert_eq!((c.paused, c.rate_limit), (false, Some(500)));
    // A pause from another operator keeps the throttle, and the other way round.
    let c = s.store.change_control(&m, Some(&a), pause).await.unwrap();
    assert_eq!(
        (c.paused, c.cancelled, c.rate_limit),
        (true, false, Some(500))
    );
    let unlimited = ControlChange {
        rate_limit: Some(None),
        ..ControlChange::default()
    };
    let c = s
        .store
        .change_control(&m, Some(&a), unlimited)
        .await
        .unwrap();
    assert_eq!((c.paused, c.rate_limit), (true, None));
    assert_eq!(s.store.scope_control(&m, Some(&a)).await.unwrap(), c);
    // The migration's own scope is separate.
    let whole = s.store.change_control(&m, None, pause).await.unwrap();
    assert_eq!((whole.paused, whole.rate_limit), (true, None));
    assert!(
        s.store
            .change_control(&m, Some(&tenant("ghost")), pause)
            .await
            .is_err()
    );
}
