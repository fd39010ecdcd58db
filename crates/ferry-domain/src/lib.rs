//! Ferry's domain: the vocabulary every other crate speaks, with no I/O.
//!
//! - [`id`]: validated tenant and migration ids, and SQL identifiers that are safe to quote.
//! - [`phase`]: the six phases a tenant moves through and which side is authoritative in each.
//! - [`transition`]: the one table of legal phase changes and the guards each must pass.
//! - [`cohort`]: how a rollout picks tenants (explicit list, stable-hash percentage, smallest first).
//! - [`route`]: where reads and writes go in each phase.
//! - [`json_text`]: JSON text that would not survive `serde_json::Value` unchanged.
//! - [`tenant_key`]: the tenant column's SQL type, and which tenant ids are values of it.
//!
//! Nothing here talks to a database, a clock or the network, so every rule can be tested
//! exhaustively in milliseconds.

pub mod cohort;
pub mod id;
pub mod json_text;
pub mod phase;
pub mod route;
pub mod tenant_key;
pub mod transition;

pub use cohort::{Cohort, CohortError, Percent, hash_bucket};
pub use id::{IdError, MigrationId, RouterId, SqlIdent, TenantId};
pub use phase::{ParsePhaseError, Phase, Side};
pub use route::{ReadPlan, WritePlan};
pub use tenant_key::{TenantKeyKind, TenantKeyMismatch, TenantKeyType, UnsupportedTenantType};
pub use transition::{
    Action, Checked, Guard, GuardFacts, GuardFailure, RULES, Rule, TenantPhase, Transition,
    TransitionError,
};
