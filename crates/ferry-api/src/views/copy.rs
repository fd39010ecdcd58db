//! The copier as operators see it: a migration's copies summed up for its status, each
//! tenant's progress (`ferry copy status`), the controls in force after a change, and what a
//! verification found. The ETA and throttle causes are worked out here once, so the CLI's
//! table and the API's JSON agree.

use ferry_store::BackfillProgress;
use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleTally {
    pub cause: String,
    pub tenants: u64,
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
