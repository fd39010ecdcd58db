//! Integration tests of the copier against real PostgreSQL (data) and both control stores.
//!
//! - `fixture.rs`: an `orders` table with several tenants, a tenant_move migration over it.
//! - `copy.rs`: exact copies, plan refusals, resume, conflicts, validation, reverse, retirement.
//! - `races.rs`: races 1 and 2 of ARCHITECTURE.md (copier vs concurrent update / delete).
//! - `backpressure.rs`: a lag signal holds the copier, and clearing it lets it finish.
//! - `epochs.rs`: a copier across a rollback to legacy starts over (the copy epoch).
//! - `in_flight.rs`: validation waits out the source's writes in flight before repairing.
//! - `types.rs`: tenant columns of every supported type, enums and domains, within one
//!   database and across two with the target created from the source's catalogue.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod backpressure;
mod copy;
mod epochs;
mod fixture;
mod in_flight;
mod races;
mod types;
