//! Integration tests of tenant moves: the application's table through every phase.
//!
//! - `phases.rs`: concurrent writers through every phase with the copier and a rollback;
//!   every key reads its last acknowledged write, nothing lost, nothing resurrected, the
//!   other tenant untouched.
//! - `types.rs`: every tenant key type, enums, domains and NULLs across two databases.
//! - `holes.rs`: holes a review found in the write path, each named after the hole it closes.
//! - `unknown.rs`: an authoritative COMMIT whose answer is lost (a fault proxy drops it).
//! - `buffer.rs`: the buffer worker, with the target down mid-move and a change it refuses.
//! - `fixture.rs`: the one-tenant table most of these tests share.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod buffer;
mod fixture;
mod holes;
mod phases;
mod types;
mod unknown;
