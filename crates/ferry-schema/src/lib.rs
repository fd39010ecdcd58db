//! Expand–contract schema changes on live PostgreSQL tables.
//!
//! A plan (JSON, the migration's config) is an ordered list of operations. `start` expands:
//! the new shape is built beside the old (duplicated columns, constraints `NOT VALID`, indexes
//! built concurrently), a *version schema* of views shows the new shape to applications that
//! put it first in their `search_path`, and triggers keep both shapes in step through each
//! operation's `up`/`down` expressions. Each tenant's history is backfilled with the copier's
//! batching, backpressure and checkpoints while the tenant moves through the phase engine;
//! its reads switch to the new version at `target_primary`. `complete` contracts (drops the
//! old shape) once every tenant is at `target_only`; `rollback` undoes `start` exactly.
//!
//! - [`plan`]: the plan file, parsed and checked against the live catalogue, resolved into
//!   the SQL of every step ([`plan::Resolved`]).
//! - `ops`: one module per operation, each giving its expand, complete and rollback steps.
//! - [`catalogue`]: what the database holds, read once per command.
//! - `views` and `sync`: the version schema and the triggers, derived from the whole plan.
//! - [`runner`]: runs steps under `lock_timeout`, retried with backoff and jitter, and keeps
//!   the migration's state in the application's database (`ferry_schema.migrations`).
//! - [`backfill`]: per-tenant keyset batches writing `up(old)` into the new columns.
//! - [`route`]: which version a tenant's reads and writes use, by the router's phase.

pub mod backfill;
pub mod catalogue;
mod error;
mod ops;
pub mod plan;
pub mod route;
pub mod runner;
mod sync;
mod views;

pub use error::{PlanError, SchemaError};
pub use plan::{Plan, Resolved, Step, StepKind};
pub use route::{Version, VersionedTable};
pub use runner::{MigrationState, Runner};
