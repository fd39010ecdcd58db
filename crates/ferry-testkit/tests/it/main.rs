//! Tests of the test kit itself. CI sets `DATABASE_URL`, so the throwaway-cluster path would
//! otherwise go untested there: `cluster.rs` starts one explicitly. `proxy.rs` tests the fault
//! proxy's modes.

// Test helpers outside #[test] functions may unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod cluster;
mod proxy;
