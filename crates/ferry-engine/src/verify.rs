//! Checking the audit log against the phases it claims to explain.
//!
//! Replaying a migration's audit entries from `legacy` must reproduce every tenant's stored
//! phase, paused flag and version, with each entry starting where the previous one ended and
//! obeying the transition rules. Anything else means a change bypassed the engine or the log
//! lost an entry.

use std::collections::HashMap;

use ferry_domain::{Action, MigrationId, RULES, TenantId, TenantPhase};
use ferry_store::{ControlStore, StoreError, TenantQuery};

/// The result of [`verify_audit`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditVerification {
    pub entries: u64,
    pub tenants: u64,
    pub forced: u64,
    /// Human-readable inconsistencies; empty when the log explains every phase.
    pub problems: Vec<String>,
}

impl AuditVerification {
    pub fn consistent(&self) -> bool {
        self.problems.is_empty()
    }
}

const PAGE: u64 = 10_000;

pub async fn verify_audit(
    store: &dyn ControlStore,
    migration: &MigrationId,
) -> Result<AuditVerification, StoreError> {
    store.migration(migration).await?;
    let mut out = AuditVerification::default();
    let mut replayed = replay(store, migration, &mut out).await?;
    compare_tenants(store, migration, &mut replayed, &mut out).await?;
    for tenant in replayed.keys() {
        out.problems
            .push(format!("{tenant}: has audit entries but is not registered"));
    }
    Ok(out)
}

/// Replays the audit log from `legacy`, page by page: where each tenant's entries lead,
/// with every entry that does not start where the previous one ended or is not a legal
/// transition recorded as a problem.
async fn replay(
    store: &dyn ControlStore,
    migration: &MigrationId,
    out: &mut AuditVerification,
) -> Result<HashMap<TenantId, TenantPhase>, StoreError> {
    let mut replayed: HashMap<TenantId, TenantPhase> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.audit_log(migration, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in &page {
            out.entries += 1;
            if e.forced() {
                out.forced += 1;
            }
            let state = replayed
                .entry(e.tenant.clone())
                .or_insert(TenantPhase::INITIAL);
            if (state.phase, state.paused) != (e.from_phase, e.from_paused) {
                out.problems.push(format!(
                    "entry {} for {}: starts at {}{} but the tenant was at {}{}",
                    e.seq,
                    e.tenant,
                    e.from_phase,
                    paused(e.from_paused),
                    state.phase,
                    paused(state.paused)
                ));
            }
            if !legal(
                e.action,
                e.from_phase,
                e.to_phase,
                e.from_paused,
                e.to_paused,
            ) {
                out.problems.push(format!(
                    "entry {} for {}: {} from {} to {} is not a legal transition",
                    e.seq, e.tenant, e.action, e.from_phase, e.to_phase
                ));
            }
            *state = TenantPhase {
                phase: e.to_phase,
                paused: e.to_paused,
                version: state.version + 1,
            };
        }
    }
    Ok(replayed)
}

/// Compares every registered tenant's stored phase with where its entries lead, taking the
/// tenant out of `replayed`; what is left there has entries but no tenant.
async fn compare_tenants(
    store: &dyn ControlStore,
    migration: &MigrationId,
    replayed: &mut HashMap<TenantId, TenantPhase>,
    out: &mut AuditVerification,
) -> Result<(), StoreError> {
    let mut after_tenant = None;
    loop {
        let tenants = store
            .tenants(
                migration,
                &TenantQuery {
                    after: after_tenant.clone(),
                    limit: Some(PAGE),
                    ..TenantQuery::default()
                },
            )
            .await?;
        let Some(last) = tenants.last() else { break };
        after_tenant = Some(last.tenant.clone());
        for t in &tenants {
            out.tenants += 1;
            let expected = replayed.remove(&t.tenant).unwrap_or(TenantPhase::INITIAL);
            if expected != t.state {
                out.problems.push(format!(
                    "{}: stored {}{} v{}, but its audit log leads to {}{} v{}",
                    t.tenant,
                    t.state.phase,
                    paused(t.state.paused),
                    t.state.version,
                    expected.phase,
                    paused(expected.paused),
                    expected.version
                ));
            }
        }
    }
    Ok(())
}

fn paused(p: bool) -> &'static str {
    if p { " (paused)" } else { "" }
}

fn legal(
    action: Action,
    from: ferry_domain::Phase,
    to: ferry_domain::Phase,
    from_paused: bool,
    to_paused: bool,
) -> bool {
    match action {
        Action::Pause => from == to && !from_paused && to_paused,
        Action::Resume => from == to && from_paused && !to_paused,
        Action::Advance | Action::Rollback => {
            from_paused == to_paused
                && RULES
                    .iter()
                    .any(|r| r.action == action && r.from == from && r.to == to)
        }
    }
}
