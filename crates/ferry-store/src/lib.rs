//! The control store: where Ferry keeps what must survive a restart and be shared by every
//! process of a deployment.
//!
//! It holds the migrations, each tenant's phase (with an optimistic version), the append-only
//! audit log, tenant sizes for cohorts, router acknowledgements for the phase barrier, and the
//! facts the transition guards read (backfill progress, validation mismatches, update-buffer
//! depth). [`ControlStore`] is the one interface; [`pg::PgStore`] is the production
//! implementation and [`sqlite::SqliteStore`] the embedded default. Both pass the same
//! conformance suite (`tests/it/conformance/`).
//!
//! `ControlStore` is the sum of one trait per area ([`MigrationStore`], [`PhaseStore`],
//! [`RouterStore`], …). Each area's module under `areas/` holds its trait and both
//! implementations, so the two dialects of an operation sit side by side; `pg` and `sqlite`
//! keep what is not one area's: connecting, the schema and its upgrades, shared helpers.
//!
//! Every phase change bumps a store-wide change counter in the same transaction. Routers cache
//! phases, follow the counter (LISTEN/NOTIFY on PostgreSQL, polling on SQLite) and report the
//! counter they have applied with a heartbeat; see [`RouterStore::heartbeat`].

mod areas;
mod error;
mod facts;
mod feed;
mod model;
mod open;
pub mod pg;
mod rows;
pub mod sqlite;

use std::time::Duration;

pub use areas::{
    AdminStore, AuditStore, BufferStore, CopyStore, GuardStore, HealthStore, ManifestStore,
    MigrationStore, MismatchStore, PhaseStore, RouterStore,
};
pub use error::{Result, StoreError, redact_url, url_with_database};
pub use feed::ChangeFeed;
pub use model::*;
pub use open::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_PG_SCHEMA, DEFAULT_STORE_URL, StoreOptions, open};

/// The schema version this binary writes. A store with a newer version is refused.
pub const SCHEMA_VERSION: i64 = 4;

/// A router whose last heartbeat is older than this is presumed dead and no longer holds back
/// phase changes. Routers heartbeat every [`DEFAULT_HEARTBEAT`], so a live one is never
/// mistaken for dead unless it misses several beats.
pub const DEFAULT_ROUTER_LEASE: Duration = Duration::from_secs(15);
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(3);

/// Which implementation a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Postgres,
    Sqlite,
}

/// Every store trait, for code that holds a concrete [`pg::PgStore`] or
/// [`sqlite::SqliteStore`]. Code holding an `Arc<dyn ControlStore>` or an `S: ControlStore`
/// needs none of them in scope: the area traits' methods resolve through `ControlStore`.
pub mod prelude {
    pub use crate::{
        AdminStore, AuditStore, BufferStore, ControlStore, CopyStore, GuardStore, HealthStore,
        ManifestStore, MigrationStore, MismatchStore, PhaseStore, RouterStore,
    };
}

/// The whole control store: every area's trait (see `areas/`), and what a store says about
/// itself.
pub trait ControlStore:
    MigrationStore
    + PhaseStore
    + AuditStore
    + GuardStore
    + CopyStore
    + MismatchStore
    + BufferStore
    + ManifestStore
    + HealthStore
    + AdminStore
    + RouterStore
    + Send
    + Sync
    + 'static
{
    fn kind(&self) -> StoreKind;

    /// Where the store lives, with any password redacted.
    fn describe(&self) -> String;
}
