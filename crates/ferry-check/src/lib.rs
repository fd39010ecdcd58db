//! The proof harness: a workload and its history checker.
//!
//! Clients write through a [`Target`] (a routed table: `MovedTable`, or any adapter) while
//! the caller moves tenants through phases, rolls them back, copies and kills things. Every
//! key belongs to one client and one tenant, so each client knows exactly what its keys must
//! hold: every acknowledged write appends a unique token to the row's `appends` list (list
//! append, as Elle does) and bumps its version. Each operation's outcome is recorded: ok,
//! refused (a definite error: the write must not have landed), or unknown (an error whose
//! write may have landed); an unknown write is resolved by reading the key back before the
//! client goes on.
//!
//! At the end [`check`] reads every key through the target and counts anomalies by kind:
//! `lost` (an acknowledged write missing), `duplicated` (a token twice), `resurrected` (a
//! deleted row back), `stale_read` (a read right after a write did not show it),
//! `version_regression` (a client saw a key's version go back), `cross_tenant` (a read
//! returned another tenant's row, or found a row under a tenant that never wrote it),
//! `corrupted` (on a table with the typed columns of [`FIELD_COLUMNS`], a column holding a
//! value no write gave it), `phantom` (a refused write that took effect). All zero is the pass.

mod check;
mod client;
mod fields;
mod scenario;
mod target;

pub use check::{Anomalies, Kind, Report, check};
pub use client::{ClientRun, ClientSettings, KeyState, key_id, run_client, run_client_counted};
pub use fields::{FIELD_COLUMNS, Fields};
pub use scenario::{
    AppPools, Clients, Progress, RunOutcome, Scenario, ScenarioError, ScenarioSettings,
};
pub use target::{MovedTarget, Seen, Target, WriteError};
