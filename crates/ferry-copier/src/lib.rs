//! The copier: moves one tenant's rows from one PostgreSQL table to another (another schema or
//! another database) while the application keeps writing.
//!
//! - [`config`]: the tenant-move plan stored in the migration (tables, tenant and version
//!   columns, batch and backpressure settings).
//! - [`plan`]: both tables read from their catalogues and checked; every statement built from
//!   validated identifiers.
//! - [`copier`]: the loop: checkpoint, controls, backpressure, a batch locked in the source and
//!   upserted into the target, validation, checkpoint again.
//! - [`validate`]: per-range checksums in SQL, diff, repair, mismatches; whole-tenant verify.
//! - [`backpressure`], [`batch`]: the signals that hold the copier back, and batch sizing.
//! - [`tenant_lock`]: the advisory lock a batch and a router's delete take against each other.

pub mod backpressure;
pub mod batch;
pub mod config;
pub mod copier;
mod error;
mod in_flight;
pub mod pace;
pub mod plan;
pub mod schedule;
mod sql;
pub mod tenant_lock;
pub mod validate;

pub use config::{LagSource, MoveBufferSettings, SourceLock, TenantMoveConfig};
pub use copier::{Copier, Outcome, connect};
pub use error::CopyError;
pub use in_flight::wait_for_transactions_in_flight;
pub use plan::TablePlan;
