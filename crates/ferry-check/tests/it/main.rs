//! Integration tests of the workload and its checker, on real PostgreSQL.
//!
//! - `faults.rs`: the same under network faults (latency, resets, blackholes, lost COMMIT
//!   answers) between the application and PostgreSQL; zero anomalies, recovery within 30 s.
//! - `moves.rs`: clients on two routers through a tenant move with phase changes, copies and
//!   rollbacks; zero anomalies.
//! - `oracle.rs`: defects injected into a finished move, each caught by validation and by the
//!   checker.
//! - `world.rs`: the tables, store, routers, copier and engine the tests share.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod faults;
mod moves;
mod oracle;
mod world;
