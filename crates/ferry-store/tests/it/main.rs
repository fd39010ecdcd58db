//! Integration tests of the control store. One binary for the crate (fewer links on 2 cores).
//!
//! - `conformance/`: the suite every store must pass; each test runs against SQLite and
//!   PostgreSQL through `both_stores!`. One file per area of `src/areas/`; new store behaviour
//!   gets its test in its area's file.
//! - `open.rs`: opening stores from URLs and refusing bad ones.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod conformance;
mod open;
