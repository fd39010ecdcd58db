//! The phase engine: the one place phase changes are decided.
//!
//! A change (for one tenant or a whole cohort) goes through three steps:
//!
//! 1. read the tenants' current state and the facts their guards need from the store, in
//!    batches (one query per fact kind per chunk, not one per tenant);
//! 2. plan and check each change with the pure rules of `ferry_domain::transition`;
//! 3. persist the accepted ones in one store transaction per chunk, each conditional on the
//!    tenant's version being unchanged, with its audit entry.
//!
//! Every change that moves a phase is reported with the change-counter value it carries; it
//! is *effective* once every live router has acknowledged that value
//! ([`PhaseEngine::wait_acknowledged`]).

mod engine;
mod report;
mod verify;

pub use engine::{DEFAULT_CHUNK, EngineError, EngineSettings, PhaseEngine, Request};
pub use report::{Acknowledgement, Moved, Refusal, Refused, RolloutReport};
pub use verify::{AuditVerification, verify_audit};
