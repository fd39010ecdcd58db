//! Integration tests of schema changes, against a real PostgreSQL.
//!
//! - `operations.rs`: every operation, started with clients of both versions writing at once,
//!   then completed; and started then rolled back to the exact catalogue it began with.
//! - `refusals.rs`: bad plans refused at validate, naming the operation and field; a long
//!   transaction on the table: `start` gives up after its lock timeouts and writers never
//!   queue behind it for longer than one timeout.
//! - `sequence.rs`: thirty operations one after another under a write load, each rolled back
//!   once and applied again.
//! - `versions.rs`: which version a write is taken for (its `search_path`), the router's
//!   read switch per tenant, a changed type's new default.
//! - `fixture.rs`: the schema they share (composite keys, an enum, NULLs) and the moves.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod fixture;
mod operations;
mod refusals;
mod sequence;
mod versions;
