//! Integration tests of the cold tier against real PostgreSQL, both control stores and a
//! real local object store.
//!
//! - `roundtrip.rs`: every supported type through a segment and back; declaration refusals.
//! - `fixture.rs`: an `events` table, a tiering migration over it, a router and a table.
//! - `phases.rs`: concurrent writers through every phase, archiving, a rollback.
//! - `races.rs`: races 4 and 5 of ARCHITECTURE.md; an unavailable cold tier.
//! - `concurrent.rs`: races 4 and 5 with writers and readers on two routers (two processes'
//!   worth of pools and `Tiering`s), archiving, hot-copy deletion and a buffer worker at once.
//! - `holes.rs`: holes a review found in tiering's paths, each named after its item.
//! - `types.rs`: every tenant key type; enum, domain and array columns; NULLs.
//! - `cloud.rs`: a segment through a real S3 protocol server (with the `cloud` feature).

#![allow(clippy::unwrap_used)]

mod cloud;
mod concurrent;
mod fixture;
mod holes;
mod phases;
mod races;
mod roundtrip;
mod types;
