//! Integration tests of the workload and its checker, on real PostgreSQL.
//!
//! - `moves.rs`: clients on two routers through a tenant move with phase changes, copies and
//!   rollbacks; zero anomalies.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod moves;
