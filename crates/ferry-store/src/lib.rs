//! The control store: where Ferry keeps what must survive a restart and be shared by every
//! process of a deployment.
//!
//! It holds the migrations, each tenant's phase (with an optimistic version), the append-only
//! audit log, tenant sizes for cohorts, router acknowledgements for the phase barrier, and the
//! facts the transition guards read (backfill progress, validation mismatches, update-buffer
//! depth). [`ControlStore`] is the one interface; [`pg::PgStore`] is the production
//! implementation and [`sqlite::SqliteStore`] the embedded default. Both pass the same
//! conformance suite (`tests/it/conformance.rs`).
//!
//! Every phase change bumps a store-wide change counter in the same transaction. Routers cache
//! phases, follow the counter (LISTEN/NOTIFY on PostgreSQL, polling on SQLite) and report the
//! counter they have applied with a heartbeat; see [`ControlStore::heartbeat`].

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

use async_trait::async_trait;
use ferry_domain::RouterId;

pub use areas::{
    AdminStore, AuditStore, BufferStore, CopyStore, GuardStore, HealthStore, ManifestStore,
    MigrationStore, MismatchStore, PhaseStore,
};
pub use error::{Result, StoreError, redact_url, url_with_database};
pub use feed::ChangeFeed;
pub use model::*;
pub use open::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_PG_SCHEMA, DEFAULT_STORE_URL, StoreOptions, open};

/// The schema version this binary writes. A store with a newer version is refused.
pub const SCHEMA_VERSION: i64 = 3;

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
        ManifestStore, MigrationStore, MismatchStore, PhaseStore,
    };
}

/// The whole control store: every area's trait (see `areas/`), and what a store says about
/// itself.
#[async_trait]
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
    + Send
    + Sync
    + 'static
{
    fn kind(&self) -> StoreKind;

    /// Where the store lives, with any password redacted.
    fn describe(&self) -> String;

    // --- routers and the acknowledgement barrier ---

    /// The current value of the store-wide change counter.
    async fn change_version(&self) -> Result<i64>;
    /// Tenants changed after `version`, across all migrations. With `version == 0` (a fresh
    /// router) tenants still in plain `legacy` are left out: that is the default a router
    /// assumes for a tenant it has no entry for.
    async fn changes_since(&self, version: i64) -> Result<Vec<TenantRecord>>;
    /// Records that `router` is alive and has applied every change up to `seen_version`.
    async fn heartbeat(
        &self,
        router: &RouterId,
        description: &str,
        seen_version: i64,
    ) -> Result<()>;
    async fn deregister_router(&self, router: &RouterId) -> Result<()>;
    /// Replaces a router's cumulative route-decision counts (sent with its heartbeat).
    async fn record_route_counts(&self, router: &RouterId, counts: &[RouteCount]) -> Result<()>;
    /// Route-decision counts per router, for every registered router.
    async fn route_counts(&self) -> Result<Vec<(RouterId, RouteCount)>>;
    /// Registered routers, each marked live if it beat within `lease`.
    async fn routers(&self, lease: Duration) -> Result<Vec<RouterRecord>>;
    /// Follows the change counter; wakes when it moves.
    fn change_feed(&self) -> ChangeFeed;
}
