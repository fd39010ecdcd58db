use std::time::Duration;

use ferry_domain::{
    Action, Cohort, GuardFailure, MigrationId, Percent, Phase, RouterId, TenantId, TransitionError,
};
use ferry_engine::{EngineError, EngineSettings, PhaseEngine, Refusal, Request};
use ferry_store::{
    BackfillProgress, CopyDirection, MigrationKind, NewMigration, StoreError, TenantSize,
};
use ferry_testkit::{TestStore, both_stores};

fn mig() -> MigrationId {
    MigrationId::new("orders_move").unwrap()
}
fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}
fn req() -> Request {
    Request {
        actor: "alice".into(),
        reason: "canary".into(),
        force: false,
        dry_run: false,
        expect_phase: None,
    }
}
fn engine(s: &TestStore) -> PhaseEngine {
    PhaseEngine::new(s.store.clone(), EngineSettings::default())
}

async fn setup(s: &TestStore, n: usize) -> Vec<TenantId> {
    s.store
        .create_migration(&NewMigration {
            id: mig(),
            kind: MigrationKind::TenantMove,
            description: String::new(),
            config: serde_json::json!({}),
            created_by: "alice".into(),
        })
        .await
        .unwrap();
    let tenants: Vec<TenantSize> = (0..n)
        .map(|i| TenantSize {
            tenant: tenant(&format!("t{i:04}")),
            rows: (i as u64 * 37) % 1000,
        })
        .collect();
    s.store.register_tenants(&mig(), &tenants).await.unwrap();
    tenants.into_iter().map(|t| t.tenant).collect()
}

async fn backfill_done(s: &TestStore, t: &TenantId, direction: CopyDirection) {
    let epoch = s.store.tenant(&mig(), t).await.unwrap().copy_epoch;
    s.store
        .record_backfill(&BackfillProgress {
            migration: mig(),
            tenant: t.clone(),
            direction,
            rows_done: 10,
            rows_total: 10,
            complete: true,
            last_key: None,
            batch_size: 0,
            rows_per_s: 0.0,
            throttled: None,
            updated_at: None,
            epoch,
        })
        .await
        .unwrap();
}

both_stores!(
    a_tenant_walks_every_phase_with_guards_met,
    a_failed_guard_refuses_and_writes_nothing,
    force_needs_a_reason_and_is_audited,
    illegal_and_unknown_requests_are_clear_errors,
    concurrent_operators_one_wins_one_conflicts,
    rollout_reports_each_tenant,
    live_lagging_routers_hold_changes_and_dead_ones_do_not,
    rollback_from_target_only_needs_reverse_sync,
    a_rollback_to_shadow_needs_a_clean_reverse_validation,
    pause_holds_a_tenant_and_survives_rollback,
    dry_run_reports_and_writes_nothing,
    audit_verification_catches_changes_that_bypassed_the_engine,
    expected_phase_makes_a_repeated_advance_idempotent,
);

async fn expected_phase_makes_a_repeated_advance_idempotent(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let t = &tenants[0];
    let e = engine(s);
    let from_legacy = Request {
        expect_phase: Some(Phase::Legacy),
        ..req()
    };
    e.change(&mig(), t, Action::Advance, &from_legacy)
        .await
        .unwrap();
    backfill_done(s, t, CopyDirection::Forward).await;
    // The same command again (a retry, or a second operator): refused, nothing moves.
    let err = e
        .change(&mig(), t, Action::Advance, &from_legacy)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::Refused {
                reason: Refusal::UnexpectedPhase {
                    expected: Phase::Legacy,
                    actual: Phase::DualWrite
                },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "cannot advance tenant t0000 of migration orders_move: is in dual_write, not legacy as the request expected"
    );
    assert_eq!(
        s.store.tenant(&mig(), t).await.unwrap().state.phase,
        Phase::DualWrite
    );
}

async fn audit_verification_catches_changes_that_bypassed_the_engine(s: &TestStore) {
    let tenants = setup(s, 30).await;
    let e = engine(s);
    e.rollout(&mig(), &Cohort::All, Action::Advance, &req(), |_, _| {})
        .await
        .unwrap();
    e.change(&mig(), &tenants[1], Action::Pause, &req())
        .await
        .unwrap();
    e.change(&mig(), &tenants[2], Action::Rollback, &req())
        .await
        .unwrap();
    let ok = ferry_engine::verify_audit(s.store.as_ref(), &mig())
        .await
        .unwrap();
    assert!(ok.consistent(), "{:?}", ok.problems);
    assert_eq!((ok.entries, ok.tenants, ok.forced), (32, 30, 0));

    // Someone edits a phase by hand, behind the engine's back.
    match s.store.kind() {
        ferry_store::StoreKind::Postgres => {
            let pool = sqlx::PgPool::connect(&s.url).await.unwrap();
            sqlx::query(
                "UPDATE ferry.ferry_tenant_phases SET phase = 'complete' WHERE tenant_id = 't0005'",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        ferry_store::StoreKind::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&s.url).await.unwrap();
            sqlx::query(
                "UPDATE ferry_tenant_phases SET phase = 'complete' WHERE tenant_id = 't0005'",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    let bad = ferry_engine::verify_audit(s.store.as_ref(), &mig())
        .await
        .unwrap();
    assert_eq!(
        bad.problems,
        ["t0005: stored complete v1, but its audit log leads to dual_write v1"]
    );
}

async fn dry_run_reports_and_writes_nothing(s: &TestStore) {
    let tenants = setup(s, 20).await;
    let e = engine(s);
    e.change(&mig(), &tenants[3], Action::Pause, &req())
        .await
        .unwrap();
    let version = s.store.change_version().await.unwrap();
    let dry = Request {
        dry_run: true,
        ..req()
    };
    let report = e
        .rollout(&mig(), &Cohort::All, Action::Advance, &dry, |_, _| {})
        .await
        .unwrap();
    assert_eq!((report.moved.len(), report.refused.len()), (19, 1));
    assert!(report.moved.iter().all(|m| m.to_phase == Phase::DualWrite));
    assert_eq!(s.store.change_version().await.unwrap(), version);
    let legacy = s.store.status().await.unwrap();
    assert_eq!(legacy.len(), 1);
    assert_eq!((legacy[0].phase, legacy[0].tenants), (Phase::Legacy, 20));
    assert_eq!(s.store.audit_log(&mig(), 0, 100).await.unwrap().len(), 1);
}

async fn a_tenant_walks_every_phase_with_guards_met(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let t = &tenants[0];
    let e = engine(s);
    let mut walked = vec![Phase::Legacy];
    for _ in 0..5 {
        if walked.last() == Some(&Phase::DualWrite) {
            backfill_done(s, t, CopyDirection::Forward).await;
        }
        let moved = e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
        assert_eq!(moved.from.phase, *walked.last().unwrap());
        assert!(moved.forced.is_empty());
        walked.push(moved.to_phase);
    }
    assert_eq!(walked, Phase::ALL);
    let history = s.store.history(&mig(), t).await.unwrap();
    assert_eq!(history.len(), 5);
    assert!(history.windows(2).all(|w| w[0].to_phase == w[1].from_phase));
    assert!(
        history
            .iter()
            .all(|h| h.actor == "alice" && h.reason == "canary")
    );
}

async fn a_failed_guard_refuses_and_writes_nothing(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let t = &tenants[0];
    let e = engine(s);
    e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
    let before = s.store.tenant(&mig(), t).await.unwrap();
    let err = e
        .change(&mig(), t, Action::Advance, &req())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot advance tenant t0000 of migration orders_move: guards failed: backfill not complete (0 of ~0 rows copied)"
    );
    assert!(matches!(
        err,
        EngineError::Refused {
            reason: Refusal::Transition(TransitionError::GuardsFailed(ref f)),
            ..
        } if f == &[GuardFailure::BackfillIncomplete { rows_done: 0, rows_total: 0 }]
    ));
    assert_eq!(s.store.tenant(&mig(), t).await.unwrap(), before);
    assert_eq!(s.store.history(&mig(), t).await.unwrap().len(), 1);
}

async fn force_needs_a_reason_and_is_audited(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let t = &tenants[0];
    let e = engine(s);
    e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
    let no_reason = Request {
        force: true,
        reason: " ".into(),
        ..req()
    };
    let err = e
        .change(&mig(), t, Action::Advance, &no_reason)
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ForceWithoutReason), "{err}");
    let forced = Request {
        force: true,
        reason: "copier verified by hand".into(),
        ..req()
    };
    let moved = e.change(&mig(), t, Action::Advance, &forced).await.unwrap();
    assert_eq!(moved.to_phase, Phase::Shadow);
    assert_eq!(moved.forced.len(), 1);
    let last = s.store.history(&mig(), t).await.unwrap().pop().unwrap();
    assert!(last.forced());
    assert_eq!(last.forced_guards, [ferry_domain::Guard::BackfillComplete]);
    assert_eq!(last.reason, "copier verified by hand");
}

async fn illegal_and_unknown_requests_are_clear_errors(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let e = engine(s);
    let err = e
        .change(&mig(), &tenants[0], Action::Rollback, &req())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot rollback tenant t0000 of migration orders_move: cannot roll back from legacy: the tenant is already on the source"
    );
    let err = e
        .change(&mig(), &tenant("ghost"), Action::Advance, &req())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Store(StoreError::TenantNotFound { .. })),
        "{err}"
    );
    let other = MigrationId::new("nope").unwrap();
    let err = e
        .change(&other, &tenants[0], Action::Advance, &req())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Store(StoreError::MigrationNotFound(_))),
        "{err}"
    );
    let err = e
        .rollout(&other, &Cohort::All, Action::Advance, &req(), |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::Store(StoreError::MigrationNotFound(_))),
        "{err}"
    );
    assert_eq!(
        s.store.change_version().await.unwrap(),
        0,
        "nothing written"
    );
}

async fn concurrent_operators_one_wins_one_conflicts(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let t = &tenants[0];
    for round in 0..5 {
        // Two operators, two processes (two store handles), the same tenant, at once.
        let a = engine(s);
        let b = PhaseEngine::new(s.reopen().await, EngineSettings::default());
        let action = if round % 2 == 0 {
            Action::Advance
        } else {
            Action::Rollback
        };
        let (m, r) = (mig(), req());
        let (ra, rb) = tokio::join!(a.change(&m, t, action, &r), b.change(&m, t, action, &r));
        let ok = [ra.is_ok(), rb.is_ok()].iter().filter(|x| **x).count();
        assert_eq!(ok, 1, "round {round}: exactly one wins: {ra:?} {rb:?}");
        let loser = ra.err().or(rb.err()).unwrap();
        assert!(
            matches!(
                loser,
                EngineError::Refused {
                    reason: Refusal::Conflict,
                    ..
                } | EngineError::Refused {
                    reason: Refusal::Transition(_),
                    ..
                }
            ),
            "round {round}: {loser}"
        );
    }
    // Five rounds, five transitions: none lost, none doubled.
    let history = s.store.history(&mig(), t).await.unwrap();
    assert_eq!(history.len(), 5);
    assert!(history.windows(2).all(|w| w[0].to_phase == w[1].from_phase));
}

async fn rollout_reports_each_tenant(s: &TestStore) {
    let tenants = setup(s, 500).await;
    let e = PhaseEngine::new(
        s.store.clone(),
        EngineSettings {
            chunk: 64,
            ..EngineSettings::default()
        },
    );
    // Pause two tenants that will be in the cohort: they must be refused, not moved.
    let cohort = Cohort::Percent(Percent::parse("20").unwrap());
    let members = s.store.cohort(&mig(), &cohort).await.unwrap();
    for m in &members[..2] {
        e.change(&mig(), &m.tenant, Action::Pause, &req())
            .await
            .unwrap();
    }
    let mut calls = vec![];
    let report = e
        .rollout(&mig(), &cohort, Action::Advance, &req(), |n, _| {
            calls.push(n)
        })
        .await
        .unwrap();
    assert_eq!(report.moved.len() + report.refused.len(), members.len());
    assert_eq!(report.refused.len(), 2);
    assert!(
        report
            .refused
            .iter()
            .all(|r| r.reason == Refusal::Transition(TransitionError::Paused))
    );
    assert_eq!(calls.last(), Some(&members.len()));
    assert_eq!(calls.len(), members.len().div_ceil(64));
    let status = s.store.status().await.unwrap();
    let dual = status.iter().find(|c| c.phase == Phase::DualWrite).unwrap();
    assert_eq!(dual.tenants as usize, members.len() - 2);
    assert_eq!(
        report.refusal_summary(),
        [("tenant is paused; resume it before advancing".to_owned(), 2)]
    );
    // A second advance of the same cohort: everyone lacks a backfill, listed once each.
    let report = e
        .rollout(&mig(), &cohort, Action::Advance, &req(), |_, _| {})
        .await
        .unwrap();
    assert!(report.moved.is_empty());
    assert_eq!(
        report.refusal_summary()[0],
        (
            "guards failed: backfill_complete".to_owned(),
            members.len() - 2
        )
    );
    // Explicit lists name what is not registered.
    let report = e
        .rollout(
            &mig(),
            &Cohort::Explicit(vec![tenants[0].clone(), tenant("ghost")]),
            Action::Pause,
            &req(),
            |_, _| {},
        )
        .await
        .unwrap();
    let refused: Vec<_> = report
        .refused
        .iter()
        .map(|r| (r.tenant.to_string(), r.reason.to_string()))
        .collect();
    assert!(refused.contains(&("ghost".into(), "not registered in this migration".into())));
    // Audit entries equal moves.
    let log = s.store.audit_log(&mig(), 0, 10_000).await.unwrap();
    let moves = 2 + (members.len() - 2) + report.moved.len();
    assert_eq!(log.len(), moves);
}

async fn live_lagging_routers_hold_changes_and_dead_ones_do_not(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let t = &tenants[0];
    let lease = Duration::from_millis(1500);
    let e = PhaseEngine::new(
        s.store.clone(),
        EngineSettings {
            router_lease: lease,
            ..EngineSettings::default()
        },
    );
    let app = RouterId::new("app-1").unwrap();
    s.store.heartbeat(&app, "test", 0).await.unwrap();
    let moved = e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
    // Not effective until app-1 acknowledges.
    let ack = e
        .wait_acknowledged(moved.change_version, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(ack.lagging, ["app-1"]);
    // app-1 has not seen dual_write: rolling back now could leave it two phases apart.
    let err = e
        .change(&mig(), t, Action::Rollback, &req())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("1 live router(s) have not acknowledged the current phase: app-1"),
        "{err}"
    );
    s.store
        .heartbeat(&app, "test", moved.change_version)
        .await
        .unwrap();
    assert!(
        e.wait_acknowledged(moved.change_version, Duration::from_secs(1))
            .await
            .unwrap()
            .effective()
    );
    let back = e.change(&mig(), t, Action::Rollback, &req()).await.unwrap();
    // app-1 goes silent: once its lease runs out it no longer holds anything back.
    let err = e
        .change(&mig(), t, Action::Advance, &req())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("app-1"), "{err}");
    // Wait until the store itself counts app-1 dead (its last beat older than the lease).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.store.routers(lease).await.unwrap().iter().any(|r| r.live) {
        assert!(std::time::Instant::now() < deadline, "app-1 never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
    assert!(again.change_version > back.change_version);
    assert!(
        e.acknowledgement(again.change_version)
            .await
            .unwrap()
            .effective()
    );
}

async fn rollback_from_target_only_needs_reverse_sync(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let t = &tenants[0];
    let e = engine(s);
    e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
    backfill_done(s, t, CopyDirection::Forward).await;
    for _ in 0..3 {
        e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
    }
    assert_eq!(
        s.store.tenant(&mig(), t).await.unwrap().state.phase,
        Phase::TargetOnly
    );
    // Step one: back to target_primary, where writes reach the source again.
    let back = e.change(&mig(), t, Action::Rollback, &req()).await.unwrap();
    assert_eq!(back.to_phase, Phase::TargetPrimary);
    // Step two (authority back to the source) waits for the reverse copy.
    let err = e
        .change(&mig(), t, Action::Rollback, &req())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the source is stale since the tenant entered target_only"),
        "{err}"
    );
    backfill_done(s, t, CopyDirection::Reverse).await;
    let moved = e.change(&mig(), t, Action::Rollback, &req()).await.unwrap();
    assert_eq!(moved.to_phase, Phase::Shadow);
    // Step three: shadow to legacy, as from any source-authoritative phase.
    let moved = e.change(&mig(), t, Action::Rollback, &req()).await.unwrap();
    assert_eq!(moved.to_phase, Phase::Legacy);
}

/// Item 7 of the review: rolling `target_primary` back to `shadow` returns authority to the
/// source, so a mismatch the reverse copy recorded (the source known to differ) must hold it
/// back, as it holds an advance; `--force` passes it, audited.
async fn a_rollback_to_shadow_needs_a_clean_reverse_validation(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let t = &tenants[0];
    let e = engine(s);
    e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
    backfill_done(s, t, CopyDirection::Forward).await;
    for _ in 0..3 {
        e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
    }
    e.change(&mig(), t, Action::Rollback, &req()).await.unwrap();
    backfill_done(s, t, CopyDirection::Reverse).await;
    let id = s
        .store
        .record_mismatch(
            &mig(),
            t,
            "[\"7\"]",
            "reverse copy: differs between the sides",
        )
        .await
        .unwrap();
    let err = e
        .change(&mig(), t, Action::Rollback, &req())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("1 unresolved validation mismatch"),
        "{err}"
    );
    assert_eq!(
        s.store.tenant(&mig(), t).await.unwrap().state.phase,
        Phase::TargetPrimary
    );
    let forced = Request {
        force: true,
        reason: "the differing row was checked by hand".into(),
        ..req()
    };
    let moved = e
        .change(&mig(), t, Action::Rollback, &forced)
        .await
        .unwrap();
    assert_eq!(moved.to_phase, Phase::Shadow);
    let audit = s.store.history(&mig(), t).await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!(
        last.forced_guards,
        [ferry_domain::Guard::NoUnresolvedMismatches],
        "the forced guard is audited"
    );
    // Once the re-check resolves it, the way back is open without force.
    s.store.resolve_mismatch(id).await.unwrap();
    e.change(&mig(), t, Action::Advance, &forced).await.unwrap();
    let moved = e.change(&mig(), t, Action::Rollback, &req()).await.unwrap();
    assert_eq!(moved.to_phase, Phase::Shadow);
}

async fn pause_holds_a_tenant_and_survives_rollback(s: &TestStore) {
    let tenants = setup(s, 1).await;
    let t = &tenants[0];
    let e = engine(s);
    e.change(&mig(), t, Action::Advance, &req()).await.unwrap();
    e.change(&mig(), t, Action::Pause, &req()).await.unwrap();
    let err = e
        .change(&mig(), t, Action::Advance, &req())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("tenant is paused; resume it before advancing")
    );
    let moved = e.change(&mig(), t, Action::Rollback, &req()).await.unwrap();
    assert_eq!((moved.to_phase, moved.to_paused), (Phase::Legacy, true));
    e.change(&mig(), t, Action::Resume, &req()).await.unwrap();
    let state = s.store.tenant(&mig(), t).await.unwrap().state;
    assert_eq!((state.phase, state.paused), (Phase::Legacy, false));
}
