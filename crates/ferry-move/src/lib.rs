//! Tenant moves, the application's side: [`MovedTable`] is the table an application reads and
//! writes through while its tenants move from one table (or database) to another.
//!
//! Every operation first takes the router's [`ferry_router::Snapshot`] and asks it where to go
//! ([`RouteDecision`]); it holds the snapshot until done, so the router never acknowledges a
//! newer phase while an operation decided under the old one is still running.
//!
//! - Writes go to the authoritative side first and fail the request only if that fails; the
//!   other side then gets the same row image (a version-guarded upsert) or the delete, and if
//!   that fails the change is parked in the update buffer instead of failing the request.
//!   An authoritative COMMIT whose answer is lost fails the request as of unknown outcome,
//!   records the key as a mismatch (so no phase change passes it unverified) and brings the
//!   other side to what the authoritative side holds (`unknown.rs`).
//! - Reads are served from the phase's read side; in `shadow` the target is read too and
//!   compared (mismatches counted and sampled in the log); in `target_primary` a failed target
//!   read falls back to the source (counted).
//!
//! - [`MoveBuffer`] applies the changes parked in the update buffer (`ferry buffer apply`,
//!   and each `ferry copy run`), under the same key lock as the routers' writes.
//!
//! Tenant ids never cross: every statement is bound to the tenant asked for, and an insert's
//! tenant column is overwritten with it.

mod buffer;
mod key_lock;
mod route;
mod table;
mod unknown;
mod write;

pub use buffer::{BufferPass, MoveBuffer};
pub use route::{Path, RouteDecision, RouteReason};
pub use table::{MoveError, MovedTable, Row, TableStats};
