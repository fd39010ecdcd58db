//! The serialized shape of what Ferry reports: `--json` output of the CLI today, the admin
//! HTTP API's bodies later. Domain and store types stay free of serde; these views are built
//! from them at the boundary, and their field names are a compatibility promise.
//!
//! [`ops::Operations`] is the one implementation of every operator action and query: the CLI
//! prints its answers, the admin API serializes them.

mod error;
pub mod ops;
pub mod tokens;
mod views;

pub use error::OpsError;
pub use views::*;
