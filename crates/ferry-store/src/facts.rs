//! Assembling guard facts from the per-table answers both stores gather the same way.

use std::collections::HashMap;

use ferry_domain::GuardFacts;

use crate::model::{CopyDirection, RouterRecord, TenantRecord};

/// Per-tenant answers of the guard queries, keyed by tenant id.
#[derive(Default)]
pub(crate) struct FactRows {
    /// `(tenant, direction) -> (rows_done, rows_total, complete)`
    pub backfill: HashMap<(String, CopyDirection), (u64, u64, bool)>,
    pub mismatches: HashMap<String, u64>,
    pub buffer: HashMap<String, u64>,
}

pub(crate) fn assemble(
    tenants: &[TenantRecord],
    rows: &FactRows,
    routers: &[RouterRecord],
) -> Vec<GuardFacts> {
    tenants
        .iter()
        .map(|t| {
            let id = t.tenant.as_str().to_owned();
            let forward = rows.backfill.get(&(id.clone(), CopyDirection::Forward));
            let reverse = rows.backfill.get(&(id.clone(), CopyDirection::Reverse));
            let (rows_done, rows_total, backfill_complete) = forward.copied().unwrap_or_default();
            GuardFacts {
                backfill_complete,
                backfill_rows_done: rows_done,
                backfill_rows_total: rows_total,
                reverse_sync_complete: reverse.is_some_and(|r| r.2),
                unresolved_mismatches: rows.mismatches.get(&id).copied().unwrap_or(0),
                buffer_depth: rows.buffer.get(&id).copied().unwrap_or(0),
                lagging_routers: routers
                    .iter()
                    .filter(|r| r.live && r.seen_version < t.changed_at_version)
                    .map(|r| r.id.to_string())
                    .collect(),
            }
        })
        .collect()
}

pub(crate) fn direction(s: &str) -> Option<CopyDirection> {
    match s {
        "forward" => Some(CopyDirection::Forward),
        "reverse" => Some(CopyDirection::Reverse),
        _ => None,
    }
}

/// Progress that a phase change makes stale, so the guards cannot pass on an old epoch.
#[derive(Default)]
pub(crate) struct Resets {
    /// Rolled back to `legacy`: the target will be refilled from scratch, so both the forward
    /// backfill and any reverse sync are forgotten.
    pub all_progress: Vec<String>,
    /// Entered `target_only`: the source stops being written, so an earlier reverse sync no
    /// longer proves the source is current.
    pub reverse_sync: Vec<String>,
}

pub(crate) fn resets(applied: &[&crate::model::PhaseChange]) -> Resets {
    use ferry_domain::Phase;
    let mut out = Resets::default();
    for c in applied {
        if c.to_phase == c.from.phase {
            continue;
        }
        match c.to_phase {
            Phase::Legacy => out.all_progress.push(c.tenant.to_string()),
            Phase::TargetOnly => out.reverse_sync.push(c.tenant.to_string()),
            _ => {}
        }
    }
    out
}
