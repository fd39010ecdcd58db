//! The control store's operations, one module per area. Each module holds the area's trait
//! (the methods and their contracts) and its PostgreSQL and SQLite implementations side by
//! side, so the two dialects of one operation are read, reviewed and changed together;
//! [`crate::ControlStore`] is the sum of the area traits.

mod admin;
mod audit;
mod buffer;
mod copies;
mod guards;
mod health;
mod manifest;
mod migrations;
mod mismatches;
mod phases;
mod routers;

pub use admin::AdminStore;
pub use audit::AuditStore;
pub use buffer::BufferStore;
pub use copies::CopyStore;
pub use guards::GuardStore;
pub use health::HealthStore;
pub use manifest::ManifestStore;
pub use migrations::MigrationStore;
pub use mismatches::MismatchStore;
pub use phases::PhaseStore;
pub use routers::RouterStore;
