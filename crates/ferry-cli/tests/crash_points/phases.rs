//! The phase change's crash points, on both control stores: before the transaction, inside it
//! before its commit, and after it before the operator log. After the crash the tenant is in
//! the old phase or the new one (never between: the audit log explains it), running the
//! change again (`--from-phase`, as an operator would) finishes it without moving the tenant
//! twice, and a mismatch validation recorded before the crash still blocks the flip of
//! authority after it.

use crate::copy::{CopyWorld, MIGRATION};
use crate::{crash, ok, text};

/// How many audit entries record `from -> to` for `acme`.
fn audited(w: &CopyWorld, from: &str, to: &str) -> usize {
    let history = ok(w
        .ferry()
        .args(["tenant", "history", MIGRATION, "acme", "--json"]));
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    history
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["from_phase"] == from && e["to_phase"] == to)
        .count()
}

/// The audit log explains every tenant's phase: no torn change.
fn assert_audit_consistent(w: &CopyWorld) {
    let out = ok(w.ferry().args(["migration", "verify", MIGRATION]));
    assert!(out.contains("consistent"), "{out}");
}

/// `acme` copied in `dual_write`, one target row tampered with and the mismatch recorded by
/// `ferry verify` (exit 3).
fn copied_with_a_recorded_mismatch(w: &CopyWorld) {
    w.change("advance", "legacy");
    ok(&mut w.copy_run());
    w.sql(
        &w.target_pool,
        "UPDATE moved.orders SET note = 'tampered' WHERE tenant_id = 'acme' AND id = 42",
    );
    let out = w.verify().output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stdout));
}

fn crash_phase_change(point: &str, pg_store: bool) {
    let w = CopyWorld::new(false, pg_store);
    copied_with_a_recorded_mismatch(&w);
    let trace = w.dir.path().join("trace");
    let advance = || {
        let mut cmd = w.ferry();
        cmd.args([
            "tenant",
            "advance",
            MIGRATION,
            "acme",
            "--from-phase",
            "dual_write",
            "--wait",
            "0",
        ]);
        cmd
    };
    crash(&mut advance(), point, 1, &trace);
    let after_crash = w.phase();
    let expected = if point == "phase_change_committed" {
        "shadow"
    } else {
        "dual_write"
    };
    assert_eq!(after_crash, expected, "crashed at {point}");
    assert_eq!(
        audited(&w, "dual_write", "shadow"),
        usize::from(expected == "shadow")
    );
    assert_audit_consistent(&w);
    // Run again: it moves the tenant once, or finds it moved already (refused, exit 3).
    let again = advance().output().unwrap();
    let code = again.status.code();
    assert!(
        code == Some(0) || (code == Some(3) && expected == "shadow"),
        "{code:?}: {}{}",
        text(&again.stdout),
        text(&again.stderr)
    );
    assert_eq!(w.phase(), "shadow");
    assert_eq!(audited(&w, "dual_write", "shadow"), 1, "moved once");
    assert_audit_consistent(&w);
    // The mismatch recorded before the crash still holds the flip of authority.
    let blocked = w
        .ferry()
        .args([
            "tenant",
            "advance",
            MIGRATION,
            "acme",
            "--from-phase",
            "shadow",
            "--wait",
            "0",
        ])
        .output()
        .unwrap();
    let said = format!("{}{}", text(&blocked.stdout), text(&blocked.stderr));
    assert_eq!(blocked.status.code(), Some(3), "{said}");
    assert!(said.contains("mismatch"), "{said}");
    assert_eq!(w.phase(), "shadow");
    // Repaired and re-verified, the tenant moves on, and the sides match row by row.
    w.sql(
        &w.target_pool,
        "UPDATE moved.orders t SET note = s.note FROM public.orders s
         WHERE t.tenant_id = s.tenant_id AND t.id = s.id AND t.tenant_id = 'acme' AND t.id = 42",
    );
    ok(&mut w.verify());
    w.change("advance", "shadow");
    assert_eq!(w.phase(), "target_primary");
    w.assert_exact();
    assert_audit_consistent(&w);
}

#[test]
fn crash_at_phase_change() {
    crash_phase_change("phase_change", false);
}

#[test]
fn crash_at_phase_change_on_postgres_store() {
    crash_phase_change("phase_change", true);
}

#[test]
fn crash_at_phase_change_commit() {
    crash_phase_change("phase_change_commit", false);
}

#[test]
fn crash_at_phase_change_commit_on_postgres_store() {
    crash_phase_change("phase_change_commit", true);
}

#[test]
fn crash_at_phase_change_committed() {
    crash_phase_change("phase_change_committed", false);
}

#[test]
fn crash_at_phase_change_committed_on_postgres_store() {
    crash_phase_change("phase_change_committed", true);
}
