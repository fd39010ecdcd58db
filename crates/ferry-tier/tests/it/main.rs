//! Integration tests of the cold tier against real PostgreSQL and a real local object store.
//!
//! - `roundtrip.rs`: every supported type through a segment and back; declaration refusals.

#![allow(clippy::unwrap_used)]

mod roundtrip;
