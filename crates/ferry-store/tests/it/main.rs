//! Integration tests of the control store. One binary for the crate (fewer links on 2 cores).
//!
//! - `conformance.rs`: the suite every store must pass; each test runs against SQLite and
//!   PostgreSQL through `both_stores!`. New store behaviour gets its test there.
//! - `open.rs`: opening stores from URLs and refusing bad ones.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod conformance;
mod open;
