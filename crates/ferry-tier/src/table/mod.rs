//! [`TieredTable`]: the application's get, insert, update and delete on a table whose old
//! rows are being tiered. Every operation first takes a [`TierRoute`] (where, and why), which
//! is counted and logged at debug level.
//!
//! | phase | archived key: reads | archived key: writes | other keys |
//! |---|---|---|---|
//! | `legacy`, `dual_write` | hot | hot, then the buffer | hot |
//! | `shadow` | hot, cold compared | hot, then the buffer | hot |
//! | `target_primary` | cold (+ buffer), hot on a cold error | buffer, then hot | hot |
//! | `target_only`, `complete` | cold (+ buffer); a cold error is an error | buffer | hot |
//!
//! An insert whose key is archived is refused by the location lookup from `target_primary`
//! on, where the hot table may no longer hold the copy that would make its own unique key
//! refuse it (deleted in `target_only`, not yet restored after a step back).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ferry_domain::{MigrationId, Phase, TenantId};
use ferry_router::{RouteOp, Router, RouterError};

use crate::error::TierError;
use crate::tiering::Tiering;

mod read;
mod write;

/// Where an operation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierPath {
    Hot,
    Cold,
    /// The hot table, then the update buffer (the cold tier's mirror).
    HotThenBuffer,
    /// The update buffer (authoritative for archived keys), then the hot copy.
    BufferThenHot,
    Buffer,
}

/// Why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierReason {
    Phase(Phase),
    /// The location lookup found the key archived.
    Archived(Phase),
    /// The cold tier failed and the phase allows answering from hot.
    Fallback(Phase),
}

impl TierPath {
    /// As a metrics label.
    pub fn label(self) -> &'static str {
        match self {
            TierPath::Hot => "hot",
            TierPath::Cold => "cold",
            TierPath::HotThenBuffer => "hot_then_buffer",
            TierPath::BufferThenHot => "buffer_then_hot",
            TierPath::Buffer => "buffer",
        }
    }
}

impl TierReason {
    /// As a metrics label, with the phase the decision was taken in.
    pub fn label(self) -> (&'static str, Phase) {
        match self {
            TierReason::Phase(p) => ("phase", p),
            TierReason::Archived(p) => ("archived", p),
            TierReason::Fallback(p) => ("fallback", p),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierRoute {
    pub path: TierPath,
    pub reason: TierReason,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    #[error(transparent)]
    Router(#[from] RouterError),
    #[error(transparent)]
    Tier(#[from] TierError),
    /// The key is archived: an insert would make a second row with it.
    #[error(
        "duplicate key {key} for tenant {tenant}: a row with this key exists, in the hot table or archived in the cold tier"
    )]
    Duplicate { tenant: TenantId, key: String },
    /// The new image of an archived row breaks a constraint (or a trigger) of the table:
    /// nothing was written or buffered.
    #[error("the new row of tenant {tenant} with key {key} is refused by the table: {detail}")]
    Rejected {
        tenant: TenantId,
        key: String,
        detail: String,
    },
    /// The cold tier could not answer in a phase where only it can.
    #[error("the cold tier cannot answer for tenant {tenant} key {key} in {phase}: {cause}")]
    ColdUnavailable {
        tenant: TenantId,
        key: String,
        phase: Phase,
        cause: Box<TierError>,
    },
}

/// Operations per path and reason, fallbacks, mismatches: what an operator reads.
#[derive(Debug, Default)]
pub struct TierStats {
    pub reads_hot: AtomicU64,
    pub reads_cold: AtomicU64,
    pub writes_hot: AtomicU64,
    pub buffered: AtomicU64,
    pub fallbacks: AtomicU64,
    pub cold_errors: AtomicU64,
    pub shadow_mismatches: AtomicU64,
    pub duplicates_refused: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub struct TieredTable {
    tiering: Arc<Tiering>,
    router: Arc<Router>,
    pub stats: TierStats,
}

impl TieredTable {
    pub fn new(tiering: Arc<Tiering>, router: Arc<Router>) -> TieredTable {
        TieredTable {
            tiering,
            router,
            stats: TierStats::default(),
        }
    }

    fn migration(&self) -> &MigrationId {
        &self.tiering.migration
    }

    fn phase(&self, tenant: &TenantId) -> Result<(Arc<ferry_router::Snapshot>, Phase), TableError> {
        let snapshot = self.router.snapshot()?;
        let phase = snapshot
            .phase(self.migration().as_str(), tenant.as_str())
            .phase;
        Ok((snapshot, phase))
    }

    /// A cold-tier failure in a phase where only the cold tier can answer: counted, and
    /// returned to the caller as [`TableError::ColdUnavailable`].
    fn cold_unavailable(
        &self,
        tenant: &TenantId,
        key: String,
        phase: Phase,
        cause: TierError,
    ) -> TableError {
        bump(&self.stats.cold_errors);
        TableError::ColdUnavailable {
            tenant: tenant.clone(),
            key,
            phase,
            cause: Box::new(cause),
        }
    }

    /// Counts a route decision (by migration, phase, path and reason) and logs it at debug.
    fn route(&self, tenant: &TenantId, op: &str, route: TierRoute) {
        let kind = match op {
            "get" | "scan" => RouteOp::Read,
            _ => RouteOp::Write,
        };
        let (reason, phase) = route.reason.label();
        self.router.record_route(
            self.migration().as_str(),
            kind,
            phase,
            route.path.label(),
            reason,
        );
        tracing::debug!(migration = %self.migration(), tenant = %tenant, op, ?route, "route");
    }
}
