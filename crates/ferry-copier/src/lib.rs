//! The copier: moves one tenant's rows from one PostgreSQL table to another (another schema or
//! another database), while the application keeps writing.

pub mod config;
mod error;
pub mod plan;

pub use config::TenantMoveConfig;
pub use error::CopyError;
pub use plan::TablePlan;
