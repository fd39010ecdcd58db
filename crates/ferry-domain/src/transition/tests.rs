use super::*;

fn ferry_domain_side_target() -> crate::phase::Side {
    crate::phase::Side::Target
}
use expect_test::expect;

fn check(current: TenantPhase, action: Action) -> String {
    match Transition::plan(current, action) {
        Ok(t) => {
            let guards: Vec<_> = t.guards.iter().map(|g| g.as_str()).collect();
            format!(
                "-> {}{} [{}]",
                t.to_phase,
                if t.to_paused { " (paused)" } else { "" },
                guards.join(", ")
            )
        }
        Err(e) => format!("refused: {e}"),
    }
}

#[test]
fn transition_matrix() {
    let mut out = String::new();
    for paused in [false, true] {
        for phase in Phase::ALL {
            for action in Action::ALL {
                let current = TenantPhase {
                    phase,
                    paused,
                    version: 1,
                };
                out.push_str(&format!(
                    "{:<22} {:<8} {}\n",
                    format!("{phase}{}", if paused { "+paused" } else { "" }),
                    action.as_str(),
                    check(current, action)
                ));
            }
        }
    }
    expect![[r#"
        legacy                 advance  -> dual_write [routers_acknowledged]
        legacy                 rollback refused: cannot roll back from legacy: the tenant is already on the source
        legacy                 pause    -> legacy (paused) []
        legacy                 resume   refused: tenant is not paused
        dual_write             advance  -> shadow [backfill_complete, routers_acknowledged]
        dual_write             rollback -> legacy [routers_acknowledged]
        dual_write             pause    -> dual_write (paused) []
        dual_write             resume   refused: tenant is not paused
        shadow                 advance  -> target_primary [backfill_complete, no_unresolved_mismatches, buffer_drained, routers_acknowledged]
        shadow                 rollback -> legacy [routers_acknowledged]
        shadow                 pause    -> shadow (paused) []
        shadow                 resume   refused: tenant is not paused
        target_primary         advance  -> target_only [no_unresolved_mismatches, buffer_drained, routers_acknowledged]
        target_primary         rollback -> shadow [reverse_sync_complete, no_unresolved_mismatches, buffer_drained, routers_acknowledged]
        target_primary         pause    -> target_primary (paused) []
        target_primary         resume   refused: tenant is not paused
        target_only            advance  -> complete [buffer_drained, routers_acknowledged]
        target_only            rollback -> target_primary [routers_acknowledged]
        target_only            pause    -> target_only (paused) []
        target_only            resume   refused: tenant is not paused
        complete               advance  refused: cannot advance from complete: it is the last phase
        complete               rollback refused: cannot roll back from complete: the source copy has been retired; migrate back with a new migration
        complete               pause    -> complete (paused) []
        complete               resume   refused: tenant is not paused
        legacy+paused          advance  refused: tenant is paused; resume it before advancing
        legacy+paused          rollback refused: cannot roll back from legacy: the tenant is already on the source
        legacy+paused          pause    refused: tenant is already paused
        legacy+paused          resume   -> legacy []
        dual_write+paused      advance  refused: tenant is paused; resume it before advancing
        dual_write+paused      rollback -> legacy (paused) [routers_acknowledged]
        dual_write+paused      pause    refused: tenant is already paused
        dual_write+paused      resume   -> dual_write []
        shadow+paused          advance  refused: tenant is paused; resume it before advancing
        shadow+paused          rollback -> legacy (paused) [routers_acknowledged]
        shadow+paused          pause    refused: tenant is already paused
        shadow+paused          resume   -> shadow []
        target_primary+paused  advance  refused: tenant is paused; resume it before advancing
        target_primary+paused  rollback -> shadow (paused) [reverse_sync_complete, no_unresolved_mismatches, buffer_drained, routers_acknowledged]
        target_primary+paused  pause    refused: tenant is already paused
        target_primary+paused  resume   -> target_primary []
        target_only+paused     advance  refused: tenant is paused; resume it before advancing
        target_only+paused     rollback -> target_primary (paused) [routers_acknowledged]
        target_only+paused     pause    refused: tenant is already paused
        target_only+paused     resume   -> target_only []
        complete+paused        advance  refused: tenant is paused; resume it before advancing
        complete+paused        rollback refused: cannot roll back from complete: the source copy has been retired; migrate back with a new migration
        complete+paused        pause    refused: tenant is already paused
        complete+paused        resume   -> complete []
    "#]]
    .assert_eq(&out);
}

#[test]
fn advance_is_one_step_and_rollback_steps_back_where_authority_changes() {
    for rule in RULES {
        match rule.action {
            Action::Advance => assert_eq!(rule.from.next(), Some(rule.to)),
            // From the target-authoritative phases a rollback is one step back; from the
            // source-authoritative ones it goes straight to legacy.
            Action::Rollback if rule.from.authority() == ferry_domain_side_target() => {
                assert_eq!(rule.from.ordinal(), rule.to.ordinal() + 1)
            }
            Action::Rollback => assert_eq!(rule.to, Phase::Legacy),
            other => panic!("{other} is not a phase change and has no rule"),
        }
        assert!(
            rule.guards.contains(&Guard::RoutersAcknowledged),
            "{rule:?} must wait for routers, or two routers could be two phases apart"
        );
        if rule.from.authority() != rule.to.authority() {
            assert!(
                rule.guards.contains(&Guard::BufferDrained),
                "{rule:?} flips authority and must drain the buffer first"
            );
        }
    }
}

fn all_good() -> GuardFacts {
    GuardFacts {
        backfill_complete: true,
        backfill_rows_done: 10,
        backfill_rows_total: 10,
        source_current: true,
        unresolved_mismatches: 0,
        buffer_depth: 0,
        lagging_routers: vec![],
    }
}

fn shadow() -> TenantPhase {
    TenantPhase {
        phase: Phase::Shadow,
        paused: false,
        version: 7,
    }
}

#[test]
fn guards_pass_when_facts_are_good() {
    let checked = Transition::plan(shadow(), Action::Advance)
        .unwrap()
        .check(&all_good(), false)
        .unwrap();
    assert_eq!(checked.transition.to_phase, Phase::TargetPrimary);
    assert!(checked.forced.is_empty());
    assert!(checked.transition.flips_authority());
}

#[test]
fn every_failing_guard_is_reported_with_its_numbers() {
    let facts = GuardFacts {
        backfill_complete: false,
        backfill_rows_done: 400,
        backfill_rows_total: 1000,
        unresolved_mismatches: 3,
        buffer_depth: 12,
        lagging_routers: vec!["app-1".into(), "app-2".into()],
        ..all_good()
    };
    let err = Transition::plan(shadow(), Action::Advance)
        .unwrap()
        .check(&facts, false)
        .unwrap_err();
    expect![[r#"guards failed: backfill not complete (400 of ~1000 rows copied); 3 unresolved validation mismatch(es); update buffer not drained (12 pending); 2 live router(s) have not acknowledged the current phase: app-1, app-2"#]]
        .assert_eq(&err.to_string());
}

#[test]
fn force_lets_failures_through_and_returns_them_for_the_audit_log() {
    let facts = GuardFacts {
        buffer_depth: 5,
        ..all_good()
    };
    let checked = Transition::plan(shadow(), Action::Advance)
        .unwrap()
        .check(&facts, true)
        .unwrap();
    assert_eq!(
        checked.forced,
        vec![GuardFailure::BufferNotDrained { depth: 5 }]
    );
    assert_eq!(checked.forced[0].guard(), Guard::BufferDrained);
}

#[test]
fn rollback_to_legacy_needs_a_current_source() {
    let current = TenantPhase {
        phase: Phase::TargetPrimary,
        paused: false,
        version: 3,
    };
    let facts = GuardFacts {
        source_current: false,
        ..all_good()
    };
    let err = Transition::plan(current, Action::Rollback)
        .unwrap()
        .check(&facts, false)
        .unwrap_err();
    assert_eq!(
        err,
        TransitionError::GuardsFailed(vec![GuardFailure::ReverseSyncIncomplete])
    );
}

#[test]
fn guard_and_action_names_round_trip() {
    for g in Guard::ALL {
        assert_eq!(Guard::parse(g.as_str()), Some(g));
    }
    for a in Action::ALL {
        assert_eq!(Action::parse(a.as_str()), Some(a));
    }
}
