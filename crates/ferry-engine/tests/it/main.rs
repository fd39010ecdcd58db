//! Integration tests of the phase engine, each run against SQLite and PostgreSQL.
//! New engine behaviour gets its test in `engine.rs`.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod engine;
