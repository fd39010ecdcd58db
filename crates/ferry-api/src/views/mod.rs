//! The serializable views, one module per subject. The crate root re-exports every one of
//! them, so their paths (`ferry_api::Status`, …) are the same wherever they live.

mod audit;
mod buffer;
mod copy;
mod rollout;
mod status;
mod tenant;

pub use audit::{AuditView, OperationView, TokenView};
pub use buffer::{BufferActionView, BufferSummary, BufferView};
pub use copy::{
    CopyControlView, CopyProgressView, CopySummary, ThrottleTally, VerifyView, throttle_cause,
};
pub use rollout::{MovedView, RefusalTally, RefusedView, RolloutView};
pub use status::{
    MigrationDetail, MigrationFacts, MigrationStatus, MigrationView, MismatchSummary, PhaseTally,
    RouteTally, RouterView, Status,
};
pub use tenant::{TenantDetail, TenantView};
