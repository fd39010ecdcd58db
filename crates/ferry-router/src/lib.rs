//! The router: the library an application embeds so every read and write of a migrating
//! table goes where the tenant's phase says.
//!
//! This first layer owns the phases. [`Router::start`] loads them from the control store into
//! an in-memory [`Snapshot`]; a background task follows the store's change counter
//! (LISTEN/NOTIFY or polling), applies changes, and acknowledges with a heartbeat. Lookups
//! never touch the store.
//!
//! # The acknowledgement barrier
//!
//! A phase change is effective once every live router has acknowledged it, and the engine
//! refuses the *next* change of a tenant until then. So live routers are never more than one
//! phase apart, and the phase table in `ferry_domain::route` is safe for any adjacent pair.
//! Two details make the acknowledgement honest:
//!
//! - An operation holds its [`Snapshot`] while it runs. After swapping in a new snapshot the
//!   router waits until no operation still holds the old one before it acknowledges, so "I am
//!   on version N" also means "nothing I am still doing was decided before N".
//! - A router that cannot heartbeat stops serving before its lease can run out: once its last
//!   successful heartbeat is older than [`RouterSettings::serve_window`], [`Router::snapshot`]
//!   fails. Otherwise a router cut off from the store would be presumed dead by the engine
//!   while still routing by stale phases.

mod counters;
mod router;
mod snapshot;

pub use counters::RouteOp;
pub use router::{Router, RouterError, RouterHealth, RouterSettings};
pub use snapshot::Snapshot;
