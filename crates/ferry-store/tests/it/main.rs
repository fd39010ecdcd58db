//! Integration tests of the control store. One binary for the crate (fewer links on 2 cores).
//!
//! - `conformance.rs`: the suite every store must pass; each test runs against SQLite and
//!   PostgreSQL through `both_stores!`. New store behaviour gets its test there.
//! - `open.rs`: opening stores from URLs and refusing bad ones.

mod conformance;
mod open;
