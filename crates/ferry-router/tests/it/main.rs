//! Integration tests of the router, each run against SQLite and PostgreSQL control stores.
//!
//! - `follow.rs`: loading, following and acknowledging phase changes; staleness.
//! - `barrier.rs`: writers racing phase changes (race 3 of ARCHITECTURE.md).
//! - `lease.rs`: a router that lost its lease routes again only after re-reading phases.
//! - `example.rs`: the embedding example under `examples/` runs as documented.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod barrier;
mod example;
mod follow;
mod lease;
