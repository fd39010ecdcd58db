//! Integration tests of the router, each run against SQLite and PostgreSQL control stores.
//!
//! - `follow.rs`: loading, following and acknowledging phase changes; staleness.
//! - `barrier.rs`: writers racing phase changes (race 3 of DESIGN.md).

mod barrier;
mod follow;
