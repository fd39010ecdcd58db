//! One tenant of a migration as operators see it: its phase (`ferry tenant list`) and, for
//! `ferry tenant show`, the guard facts its next advance waits for, so "why is it stuck"
//! has one answer in the CLI and the API.

use chrono::{DateTime, Utc};
use ferry_store::TenantRecord;
use serde::{Deserialize, Serialize};

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
