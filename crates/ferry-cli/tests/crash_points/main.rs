//! The real `ferry` binary, built with the `failpoints` feature, crashed at every named crash
//! point (see `ferry_crash::POINTS`) and then run again to the end: nothing lost, nothing
//! duplicated, checkpoints only forward, phases never torn.
//!
//! - `copy.rs`: the copier's points, forward in one database and across two, and the reverse
//!   copy of a rollback from `target_only` (`rollback_walk`); a resumed run copies only what
//!   was left.
//! - `phases.rs`: the phase change's three points on both control stores; the phase is the old
//!   or the new one, the audit log explains it, and a failed validation still blocks.
//! - `schema.rs`: `ferry schema start`, `complete` and `rollback` crashed after every step, and
//!   the backfill between a batch's commit and its checkpoint; run again, each finishes.
//! - `tier.rs`: archiving, the update buffer and hot-copy deletion, and the stale re-queue a
//!   crashed archive used to leave behind.
//! - `kills.rs`: many crashes at random moments of `ferry copy run` and `ferry tier run`,
//!   counted per stage (each stage required), and `kill -9` at moments read from the trace.
//!
//! Every test makes its own database (`TestDb`) and its own store directory, removed after.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod copy;
mod kills;
mod phases;
mod schema;
mod tier;

use std::path::Path;
use std::process::{Command, Output};

/// A `ferry` command on the given store, as an operator named `tester`, with no crash
/// variables of the test's own environment.
pub fn ferry(store_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.env("FERRY_DATABASE_URL", store_url)
        .env("FERRY_ACTOR", "tester")
        .env_remove("RUST_LOG")
        .env_remove("FERRY_CRASH_AT")
        .env_remove("FERRY_CRASH_AFTER")
        .env_remove("FERRY_CRASH_TRACE");
    cmd
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs and asserts success, returning stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run the ferry binary");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs `cmd` set to crash at the `after`-th visit of `point`, tracing into `trace`, and
/// asserts it did: exit code 86 and the point named on stderr.
pub fn crash(cmd: &mut Command, point: &str, after: u32, trace: &Path) -> Output {
    let out = cmd
        .env("FERRY_CRASH_AT", point)
        .env("FERRY_CRASH_AFTER", after.to_string())
        .env("FERRY_CRASH_TRACE", trace)
        .output()
        .expect("run the ferry binary");
    assert_eq!(
        out.status.code(),
        Some(ferry_crash::EXIT_CODE),
        "{cmd:?} was to crash at {point} #{after}:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("ferry: crash point {point} hit")),
        "{stderr}"
    );
    let visits = trace_lines(trace);
    assert_eq!(
        visits.last().map(String::as_str),
        Some(point),
        "the crash is the trace's last point"
    );
    assert_eq!(
        visits.iter().filter(|p| *p == point).count(),
        after as usize
    );
    out
}

/// The points a traced run visited, in order.
pub fn trace_lines(trace: &Path) -> Vec<String> {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The checkpoint (rows done) of `tenant`'s copy in `direction`, if it has one.
pub fn checkpoint(store: &str, migration: &str, tenant: &str, direction: &str) -> Option<u64> {
    let status = ok(ferry(store).args(["copy", "status", migration, "--json"]));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["tenant"] == tenant && p["direction"] == direction)
        .map(|p| p["rows_done"].as_u64().unwrap())
}

/// The tenant's phase as `ferry tenant show` prints it.
pub fn phase(store: &str, migration: &str, tenant: &str) -> String {
    let shown = ok(ferry(store).args(["tenant", "show", migration, tenant, "--json"]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    shown["tenant"]["phase"].as_str().unwrap().to_owned()
}

/// The binary refuses an unknown point by name, so a misspelt test cannot pass by never
/// crashing.
#[test]
fn an_unknown_crash_point_is_refused() {
    let out = ferry("sqlite::memory:")
        .args(["status"])
        .env("FERRY_CRASH_AT", "copy_batch_begin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("FERRY_CRASH_AT=copy_batch_begin is not a crash point"),
        "{stderr}"
    );
    assert!(stderr.contains("copy_before_commit"), "{stderr}");
}
