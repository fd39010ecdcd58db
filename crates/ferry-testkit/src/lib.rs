//! Test support for Ferry: real components, no mocks.
//!
//! - [`TestDb`]: a fresh PostgreSQL database per test, dropped afterwards. The server is the
//!   one `DATABASE_URL` names, or else a throwaway cluster this process starts with
//!   `initdb`/`pg_ctl` (see [`cluster`]). Without either, the test panics saying how to
//!   provide one: a test that needs PostgreSQL never skips.
//! - [`TempDir`]: a directory removed on drop, for SQLite files and object stores.
//! - [`TestStore`]: a control store of either kind, for suites that run against both.
//! - [`TestRole`]: a login role of one test's own, to take privileges from one client.
//! - [`Replicated`]: a throwaway primary with a streaming hot standby, for lag tests.
//! - [`saas`]: a table of the shape real SaaS schemas have, with every tenant key type.
//! - [`FaultProxy`]: a TCP proxy in front of PostgreSQL that injects network faults (latency,
//!   resets, a blackhole, lost COMMIT answers).

/// The throwaway cluster, from `ferry-pg` (the demo starts one too).
pub use ferry_pg as cluster;
mod db;
mod proxy;
mod replica;
mod role;
pub mod saas;
mod store;
mod tempdir;

pub use db::{TestDb, server_url};
pub use proxy::{FaultProxy, ProxyCounters};
pub use replica::Replicated;
pub use role::{TestRole, url_with_user};
pub use store::TestStore;
pub use tempdir::TempDir;
