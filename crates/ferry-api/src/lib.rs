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

use chrono::{DateTime, Utc};
use ferry_engine::{Moved, RolloutReport};
use ferry_store::{AuditEntry, BackfillProgress, OperationRecord, TenantRecord};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BufferSummary {
    /// Changes waiting to be applied.
    pub pending: u64,
    /// Changes that failed too often and wait for an operator (`ferry buffer retry|drop`).
    pub dead: u64,
    /// Pending changes that have failed at least once.
    pub retrying: u64,
    /// Failed attempts, summed over open changes.
    pub attempts: u64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// The copies (backfills, reverse syncs) of a migration's tenants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CopySummary {
    pub running: u64,
    pub complete: u64,
    pub rows_done: u64,
    pub rows_total: u64,
    /// Summed over running copies.
    pub rows_per_s: f64,
    /// Running copies held back or slowed, by cause (e.g. `replication lag`).
    pub throttled: Vec<ThrottleTally>,
    /// The running copies, largest first (at most 20).
    pub active: Vec<CopyProgressView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleTally {
    pub cause: String,
    pub tenants: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantView {
    pub migration: String,
    pub tenant: String,
    pub phase: String,
    pub paused: bool,
    pub version: i64,
    pub rows: u64,
    pub cohort_bucket: u32,
    pub updated_at: DateTime<Utc>,
}

impl From<&TenantRecord> for TenantView {
    fn from(t: &TenantRecord) -> Self {
        TenantView {
            migration: t.migration.to_string(),
            tenant: t.tenant.to_string(),
            phase: t.state.phase.as_str().to_owned(),
            paused: t.state.paused,
            version: t.state.version,
            rows: t.rows,
            cohort_bucket: t.cohort_bucket,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditView {
    pub seq: i64,
    pub migration: String,
    pub tenant: String,
    pub action: String,
    pub from_phase: String,
    pub from_paused: bool,
    pub to_phase: String,
    pub to_paused: bool,
    pub actor: String,
    pub reason: String,
    pub forced_guards: Vec<String>,
    pub at: DateTime<Utc>,
}

impl From<&AuditEntry> for AuditView {
    fn from(e: &AuditEntry) -> Self {
        AuditView {
            seq: e.seq,
            migration: e.migration.to_string(),
            tenant: e.tenant.to_string(),
            action: e.action.as_str().to_owned(),
            from_phase: e.from_phase.as_str().to_owned(),
            from_paused: e.from_paused,
            to_phase: e.to_phase.as_str().to_owned(),
            to_paused: e.to_paused,
            actor: e.actor.clone(),
            reason: e.reason.clone(),
            forced_guards: e
                .forced_guards
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect(),
            at: e.at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovedView {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub paused: bool,
    pub forced: Vec<String>,
}

impl From<&Moved> for MovedView {
    fn from(m: &Moved) -> Self {
        MovedView {
            tenant: m.tenant.to_string(),
            from: m.from.phase.as_str().to_owned(),
            to: m.to_phase.as_str().to_owned(),
            paused: m.to_paused,
            forced: m.forced.iter().map(|f| f.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedView {
    pub tenant: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalTally {
    pub reason: String,
    pub tenants: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutView {
    pub action: String,
    pub dry_run: bool,
    pub moved: Vec<MovedView>,
    pub refused: Vec<RefusedView>,
    /// Refusals grouped by kind (per-tenant figures left out), most frequent first.
    pub refusal_summary: Vec<RefusalTally>,
    pub change_version: i64,
    /// Live routers that had not acknowledged the change when the command returned.
    pub pending_acknowledgement: Vec<String>,
}

impl RolloutView {
    pub fn build(
        action: ferry_domain::Action,
        dry_run: bool,
        report: &RolloutReport,
        pending: Vec<String>,
    ) -> RolloutView {
        RolloutView {
            action: action.as_str().to_owned(),
            dry_run,
            moved: report.moved.iter().map(MovedView::from).collect(),
            refused: report
                .refused
                .iter()
                .map(|r| RefusedView {
                    tenant: r.tenant.to_string(),
                    reason: r.reason.to_string(),
                })
                .collect(),
            refusal_summary: report
                .refusal_summary()
                .into_iter()
                .map(|(reason, n)| RefusalTally {
                    reason,
                    tenants: n as u64,
                })
                .collect(),
            change_version: report.change_version(),
            pending_acknowledgement: pending,
        }
    }
}

/// `ferry tenant show --json`: the tenant and what its next advance waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantDetail {
    pub tenant: TenantView,
    pub backfill_rows_done: u64,
    pub backfill_rows_total: u64,
    pub backfill_complete: bool,
    pub unresolved_mismatches: u64,
    pub buffer_depth: u64,
    pub lagging_routers: Vec<String>,
    pub next_advance: String,
}

impl TenantDetail {
    pub fn build(
        record: &TenantRecord,
        facts: &ferry_domain::GuardFacts,
        next_advance: String,
    ) -> TenantDetail {
        TenantDetail {
            tenant: TenantView::from(record),
            backfill_rows_done: facts.backfill_rows_done,
            backfill_rows_total: facts.backfill_rows_total,
            backfill_complete: facts.backfill_complete,
            unresolved_mismatches: facts.unresolved_mismatches,
            buffer_depth: facts.buffer_depth,
            lagging_routers: facts.lagging_routers.clone(),
            next_advance,
        }
    }
}

/// One tenant's copy, as `ferry copy status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyProgressView {
    pub tenant: String,
    pub direction: String,
    pub rows_done: u64,
    pub rows_total: u64,
    pub complete: bool,
    pub rows_per_s: f64,
    /// Seconds left at the current rate, while copying.
    pub eta_s: Option<f64>,
    pub batch_size: u64,
    pub throttled: Option<String>,
}

impl From<&ferry_store::BackfillProgress> for CopyProgressView {
    fn from(p: &ferry_store::BackfillProgress) -> Self {
        CopyProgressView {
            tenant: p.tenant.to_string(),
            direction: p.direction.as_str().to_owned(),
            rows_done: p.rows_done,
            rows_total: p.rows_total,
            complete: p.complete,
            rows_per_s: p.rows_per_s,
            eta_s: (!p.complete && p.rows_per_s > 0.0)
                .then(|| p.rows_total.saturating_sub(p.rows_done) as f64 / p.rows_per_s),
            batch_size: p.batch_size,
            throttled: p.throttled.clone(),
        }
    }
}

/// `ferry verify --json`: which keys (JSON arrays of text values) differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyView {
    pub tenant: String,
    pub matches: bool,
    pub missing: Vec<String>,
    pub differing: Vec<String>,
    pub extra: Vec<String>,
}

/// The signal a throttle reason names, without its figures: `replication lag 12.0s > 5.0s`
/// is `replication lag`.
pub fn throttle_cause(reason: &str) -> String {
    let cut = reason
        .find(|c: char| c.is_ascii_digit() || c == ':' || c == '(')
        .unwrap_or(reason.len());
    let cause = reason[..cut].trim_end_matches([' ', '>', '<', '=']).trim();
    if cause.is_empty() {
        reason.trim().to_owned()
    } else {
        cause.to_owned()
    }
}

impl CopySummary {
    pub fn build(progress: &[BackfillProgress]) -> CopySummary {
        let mut summary = CopySummary::default();
        let mut causes: std::collections::BTreeMap<String, u64> = Default::default();
        let mut active: Vec<&BackfillProgress> = Vec::new();
        for p in progress {
            summary.rows_done += p.rows_done;
            summary.rows_total += p.rows_total.max(p.rows_done);
            if p.complete {
                summary.complete += 1;
                continue;
            }
            // A copy the store set up but no copier has touched (e.g. the reverse sync a
            // tenant in target_only would need after a rollback) is not running.
            let started = p.rows_done > 0 || p.rows_total > 0 || p.throttled.is_some();
            if !started {
                continue;
            }
            summary.running += 1;
            summary.rows_per_s += p.rows_per_s;
            if let Some(why) = &p.throttled {
                *causes.entry(throttle_cause(why)).or_default() += 1;
            }
            active.push(p);
        }
        active.sort_by(|a, b| {
            b.rows_total
                .cmp(&a.rows_total)
                .then_with(|| a.tenant.cmp(&b.tenant))
        });
        summary.active = active
            .into_iter()
            .take(20)
            .map(CopyProgressView::from)
            .collect();
        summary.throttled = causes
            .into_iter()
            .map(|(cause, tenants)| ThrottleTally { cause, tenants })
            .collect();
        summary
    }
}

/// A change in, or parked by, the update buffer (`ferry buffer list`, `GET …/buffer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferView {
    pub seq: i64,
    pub tenant: String,
    pub key: String,
    pub operation: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub enqueued_at: DateTime<Utc>,
}

impl From<&ferry_store::BufferedUpdate> for BufferView {
    fn from(u: &ferry_store::BufferedUpdate) -> Self {
        BufferView {
            seq: u.seq,
            tenant: u.tenant.to_string(),
            key: u.key.clone(),
            operation: u.operation.clone(),
            state: u.state.clone(),
            attempts: u.attempts,
            last_error: u.last_error.clone(),
            enqueued_at: u.enqueued_at,
        }
    }
}

/// One entry of the operator log: a mutating call, who made it, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationView {
    pub seq: i64,
    pub actor: String,
    pub operation: String,
    pub target: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

impl From<&OperationRecord> for OperationView {
    fn from(o: &OperationRecord) -> Self {
        OperationView {
            seq: o.seq,
            actor: o.actor.clone(),
            operation: o.operation.clone(),
            target: o.target.clone(),
            outcome: o.outcome.clone(),
            at: o.at,
        }
    }
}

/// The copy controls in force for a scope after a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyControlView {
    pub migration: String,
    pub tenant: Option<String>,
    pub paused: bool,
    pub cancelled: bool,
    pub rows_per_s: Option<u64>,
}

/// The answer to a buffer operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferActionView {
    pub seq: i64,
    pub action: String,
    pub state: String,
}

/// An API token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenView {
    pub name: String,
    pub scope: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ferry_store::TokenRecord> for TokenView {
    fn from(t: &ferry_store::TokenRecord) -> Self {
        TokenView {
            name: t.name.clone(),
            scope: t.scope.as_str().to_owned(),
            created_by: t.created_by.clone(),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}
