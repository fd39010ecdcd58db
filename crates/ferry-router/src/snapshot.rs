use std::collections::HashMap;

use ferry_domain::{MigrationId, Phase, ReadPlan, TenantId, TenantPhase, WritePlan};
use ferry_store::TenantRecord;

/// An immutable view of every tenant's phase at one value of the change counter.
///
/// Tenants without an entry are in plain `legacy`, so a router holds entries only for tenants
/// that have started moving.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    version: i64,
    phases: HashMap<MigrationId, HashMap<TenantId, TenantPhase>>,
}

impl Snapshot {
    /// The change counter this snapshot reflects.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The tenant's phase. Takes `&str` so a hot path needs no id allocation.
    pub fn phase(&self, migration: &str, tenant: &str) -> TenantPhase {
        self.phases
            .get(migration)
            .and_then(|tenants| tenants.get(tenant))
            .copied()
            .unwrap_or(TenantPhase::INITIAL)
    }

    pub fn write_plan(&self, migration: &str, tenant: &str) -> WritePlan {
        WritePlan::for_phase(self.phase(migration, tenant).phase)
    }

    pub fn read_plan(&self, migration: &str, tenant: &str) -> ReadPlan {
        ReadPlan::for_phase(self.phase(migration, tenant).phase)
    }

    /// Number of tenants with an entry (not in plain `legacy`).
    pub fn tracked(&self) -> usize {
        self.phases.values().map(HashMap::len).sum()
    }

    /// A new snapshot with `changes` applied, at `version`.
    pub(crate) fn apply(&self, changes: Vec<TenantRecord>, version: i64) -> Snapshot {
        let mut next = self.clone();
        for record in changes {
            let tenants = next.phases.entry(record.migration).or_default();
            let plain_legacy = record.state.phase == Phase::Legacy && !record.state.paused;
            if plain_legacy {
                tenants.remove(&record.tenant);
            } else {
                tenants.insert(record.tenant, record.state);
            }
        }
        next.phases.retain(|_, tenants| !tenants.is_empty());
        next.version = version;
        next
    }
}
