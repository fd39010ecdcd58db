//! Integration tests of the phase engine, each run against SQLite and PostgreSQL.
//! New engine behaviour gets its test in `engine.rs`; `state_machine.rs` is a property test
//! of random operator races checked against the audit log and the transition rules.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod engine;
mod state_machine;
