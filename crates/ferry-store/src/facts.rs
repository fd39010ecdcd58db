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
                // A reverse row exists from the moment the tenant enters target_only until the
                // tenant is back in legacy; the source is current when there is none, or when
                // the reverse copy has completed.
                source_current: reverse.is_none_or(|r| r.2),
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
    /// Entered `target_only`, or stepped back from it: the source is stale until a reverse
    /// copy that starts from now completes.
    pub reverse_sync: Vec<String>,
}

pub(crate) fn resets(applied: &[&crate::model::PhaseChange]) -> Resets {
    use ferry_domain::Phase;
    let mut out = Resets::default();
    for c in applied {
        if c.to_phase == c.from.phase {
            continue;
        }
        match (c.from.phase, c.to_phase) {
            (_, Phase::Legacy) => out.all_progress.push(c.tenant.to_string()),
            // Entering target_only stops writes to the source; stepping back from it starts
            // them again, and only a reverse copy that starts after that can make the source
            // current, so an earlier one is forgotten too.
            (_, Phase::TargetOnly) | (Phase::TargetOnly, Phase::TargetPrimary) => {
                out.reverse_sync.push(c.tenant.to_string())
            }
            _ => {}
        }
    }
    out
}

/// The control row that applies to a whole migration; tenant ids cannot contain `*`.
pub(crate) const MIGRATION_SCOPE: &str = "*";

/// Merges the migration-wide and tenant control rows (`(scope, paused, cancelled, rate)`).
pub(crate) fn controls(
    rows: Vec<(String, bool, bool, Option<i64>)>,
    tenant: Option<&ferry_domain::TenantId>,
) -> crate::model::CopyControl {
    rows.into_iter()
        .filter(|(scope, ..)| {
            scope == MIGRATION_SCOPE || Some(scope.as_str()) == tenant.map(|t| t.as_str())
        })
        .map(|(_, paused, cancelled, rate)| crate::model::CopyControl {
            paused,
            cancelled,
            rate_limit: rate.and_then(|r| u64::try_from(r).ok()),
        })
        .fold(
            crate::model::CopyControl::default(),
            crate::model::CopyControl::merge,
        )
}

/// A copy checkpoint's key, stored as a JSON array of text values.
pub(crate) fn key_to_text(key: Option<&[String]>) -> Option<String> {
    key.map(|k| serde_json::Value::from(k.to_vec()).to_string())
}

/// `(tenant_id, direction, last_key, rows_done, rows_total, complete, batch_size, rows_per_s,
/// throttled, updated_at, epoch)`.
pub(crate) type ProgressRow<T> = (
    String,
    String,
    Option<String>,
    i64,
    i64,
    bool,
    i64,
    f64,
    Option<String>,
    T,
    i64,
);

pub(crate) fn progress<T>(
    migration: &ferry_domain::MigrationId,
    row: ProgressRow<T>,
    at: impl FnOnce(T) -> crate::Result<chrono::DateTime<chrono::Utc>>,
) -> crate::Result<crate::model::BackfillProgress> {
    use crate::StoreError;
    let (tenant, dir, last_key, done, total, complete, batch, rate, throttled, updated, epoch) =
        row;
    let corrupt = |what: String| StoreError::Corrupt { what };
    let last_key = match last_key {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<Vec<String>>(&text)
                .map_err(|e| corrupt(format!("checkpoint key {text:?}: {e}")))?,
        ),
    };
    Ok(crate::model::BackfillProgress {
        migration: migration.clone(),
        tenant: crate::rows::tenant_id(tenant)?,
        direction: direction(&dir).ok_or_else(|| corrupt(format!("backfill direction {dir:?}")))?,
        last_key,
        rows_done: crate::rows::count(done)?,
        rows_total: crate::rows::count(total)?,
        complete,
        batch_size: crate::rows::count(batch)?,
        rows_per_s: rate,
        throttled,
        updated_at: Some(at(updated)?),
        epoch,
    })
}

/// Whether a copy in `direction` may record progress while the tenant is in `phase`: the
/// forward copy runs in dual_write and shadow, the reverse copy in target_primary. Anything
/// else is a copier from an earlier epoch that must not make a guard pass.
pub(crate) fn progress_allowed(direction: CopyDirection, phase: ferry_domain::Phase) -> bool {
    use ferry_domain::Phase;
    match direction {
        CopyDirection::Forward => matches!(phase, Phase::DualWrite | Phase::Shadow),
        CopyDirection::Reverse => phase == Phase::TargetPrimary,
    }
}

/// One change per tenant per call: two would both match the tenant's version in one statement.
pub(crate) fn reject_duplicates(changes: &[crate::model::PhaseChange]) -> crate::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for c in changes {
        if !seen.insert(&c.tenant) {
            return Err(crate::StoreError::InvalidRequest(format!(
                "tenant {} appears twice in one batch of phase changes",
                c.tenant
            )));
        }
    }
    Ok(())
}
