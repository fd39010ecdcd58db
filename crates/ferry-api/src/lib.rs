//! The serialized shape of what Ferry reports: `--json` output of the CLI today, the admin
//! HTTP API's bodies later. Domain and store types stay free of serde; these views are built
//! from them at the boundary, and their field names are a compatibility promise.

use chrono::{DateTime, Utc};
use ferry_domain::Phase;
use ferry_engine::{Moved, RolloutReport};
use ferry_store::{AuditEntry, Migration, PhaseCount, RouterRecord, TenantRecord};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationView {
    pub id: String,
    pub kind: String,
    pub description: String,
    pub config: serde_json::Value,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<&Migration> for MigrationView {
    fn from(m: &Migration) -> Self {
        MigrationView {
            id: m.id.to_string(),
            kind: m.kind.as_str().to_owned(),
            description: m.description.clone(),
            config: m.config.clone(),
            created_by: m.created_by.clone(),
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseTally {
    pub phase: String,
    pub tenants: u64,
    pub paused: u64,
    pub rows: u64,
}

/// One migration's tenants per phase; every phase is present, zeros included, in phase order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationStatus {
    pub migration: String,
    pub kind: String,
    pub tenants: u64,
    pub paused: u64,
    pub phases: Vec<PhaseTally>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterView {
    pub id: String,
    pub description: String,
    pub seen_version: i64,
    pub live: bool,
    pub heartbeat_at: DateTime<Utc>,
}

impl From<&RouterRecord> for RouterView {
    fn from(r: &RouterRecord) -> Self {
        RouterView {
            id: r.id.to_string(),
            description: r.description.clone(),
            seen_version: r.seen_version,
            live: r.live,
            heartbeat_at: r.heartbeat_at,
        }
    }
}

/// What `ferry status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub store: String,
    pub change_version: i64,
    pub migrations: Vec<MigrationStatus>,
    pub routers: Vec<RouterView>,
}

impl Status {
    pub fn build(
        store: String,
        change_version: i64,
        migrations: &[Migration],
        counts: &[PhaseCount],
        routers: &[RouterRecord],
    ) -> Status {
        let migrations = migrations
            .iter()
            .map(|m| {
                let mut phases: Vec<PhaseTally> = Phase::ALL
                    .iter()
                    .map(|p| PhaseTally {
                        phase: p.as_str().to_owned(),
                        tenants: 0,
                        paused: 0,
                        rows: 0,
                    })
                    .collect();
                let (mut tenants, mut paused) = (0, 0);
                for c in counts.iter().filter(|c| c.migration == m.id) {
                    let tally = &mut phases[c.phase.ordinal()];
                    tally.tenants = c.tenants;
                    tally.paused = c.paused;
                    tally.rows = c.rows;
                    tenants += c.tenants;
                    paused += c.paused;
                }
                MigrationStatus {
                    migration: m.id.to_string(),
                    kind: m.kind.as_str().to_owned(),
                    tenants,
                    paused,
                    phases,
                }
            })
            .collect();
        Status {
            store,
            change_version,
            migrations,
            routers: routers.iter().map(RouterView::from).collect(),
        }
    }
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
pub struct RolloutView {
    pub action: String,
    pub dry_run: bool,
    pub moved: Vec<MovedView>,
    pub refused: Vec<RefusedView>,
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
            change_version: report.change_version(),
            pending_acknowledgement: pending,
        }
    }
}

/// `ferry migration show --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationDetail {
    pub migration: MigrationView,
    pub status: MigrationStatus,
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
