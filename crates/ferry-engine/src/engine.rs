use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ferry_domain::{
    Action, Cohort, Guard, GuardFacts, GuardFailure, MigrationId, Phase, TenantId, Transition,
};
use ferry_store::{AuditMeta, ControlStore, PhaseChange, StoreError, TenantRecord};

use crate::report::{Acknowledgement, Moved, Refusal, Refused, RolloutReport};

/// Tenants per store round: large enough that a million-tenant rollout takes a few hundred
/// statements, small enough that one transaction stays short and progress is reported often.
pub const DEFAULT_CHUNK: usize = 5_000;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Routers silent for longer than this are presumed dead and do not hold changes back.
    pub router_lease: Duration,
    pub chunk: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            router_lease: ferry_store::DEFAULT_ROUTER_LEASE,
            chunk: DEFAULT_CHUNK,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot {action} tenant {tenant} of migration {migration}: {reason}")]
    Refused {
        migration: MigrationId,
        tenant: TenantId,
        action: Action,
        reason: Refusal,
    },
    #[error("--force overrides safety guards and needs a --reason for the audit log")]
    ForceWithoutReason,
    /// Earlier chunks of a rollout were committed (and audited) before this one failed.
    #[error(
        "the rollout stopped after changing {changed} tenant(s), which stay changed (see the audit log): {cause}; re-run it with --from-phase to continue"
    )]
    Interrupted {
        changed: usize,
        cause: Box<EngineError>,
    },
}

/// Who asks for a change, why, and whether failed guards may be overridden.
#[derive(Debug, Clone)]
pub struct Request {
    pub actor: String,
    pub reason: String,
    pub force: bool,
    /// Plan and check every change but persist nothing: moved tenants are what *would* move.
    pub dry_run: bool,
    /// Act only on tenants currently in this phase; others are refused. Makes a repeated or
    /// concurrent "advance" idempotent: the second one finds the tenant already moved.
    pub expect_phase: Option<Phase>,
}

pub struct PhaseEngine {
    store: Arc<dyn ControlStore>,
    settings: EngineSettings,
}

impl PhaseEngine {
    pub fn new(store: Arc<dyn ControlStore>, settings: EngineSettings) -> PhaseEngine {
        PhaseEngine { store, settings }
    }

    pub fn store(&self) -> &Arc<dyn ControlStore> {
        &self.store
    }

    /// Applies `action` to one tenant. A refusal is an error naming the tenant and why.
    pub async fn change(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
        action: Action,
        request: &Request,
    ) -> Result<Moved, EngineError> {
        // Reading the tenant first turns "unknown tenant/migration" into the store's
        // precise error rather than a generic refusal.
        self.store.tenant(migration, tenant).await?;
        let cohort = Cohort::Explicit(vec![tenant.clone()]);
        let mut report = self
            .rollout(migration, &cohort, action, request, |_, _| {})
            .await?;
        if let Some(moved) = report.moved.pop() {
            return Ok(moved);
        }
        let refused = report
            .refused
            .pop()
            .expect("a one-tenant rollout either moves or refuses the tenant");
        Err(EngineError::Refused {
            migration: migration.clone(),
            tenant: refused.tenant,
            action,
            reason: refused.reason,
        })
    }

    /// Applies `action` to every tenant of a cohort, each with its own guards, reporting per
    /// tenant what moved and what was refused. `progress(done, total)` is called after each
    /// chunk with the number of tenants handled so far and the cohort's size.
    pub async fn rollout(
        &self,
        migration: &MigrationId,
        cohort: &Cohort,
        action: Action,
        request: &Request,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<RolloutReport, EngineError> {
        if request.force && request.reason.trim().is_empty() {
            return Err(EngineError::ForceWithoutReason);
        }
        self.store.migration(migration).await?;
        let tenants = self.store.cohort(migration, cohort).await?;
        let mut report = RolloutReport::default();
        if let Cohort::Explicit(listed) = cohort {
            let found: HashSet<&TenantId> = tenants.iter().map(|t| &t.tenant).collect();
            let mut seen = HashSet::new();
            for t in listed {
                if !found.contains(t) && seen.insert(t) {
                    report.refused.push(Refused {
                        tenant: t.clone(),
                        reason: Refusal::NotRegistered,
                    });
                }
            }
        }
        let meta = AuditMeta {
            actor: request.actor.clone(),
            reason: request.reason.clone(),
        };
        let mut done = 0;
        for chunk in tenants.chunks(self.settings.chunk.max(1)) {
            let before = report.moved.len();
            let result = self
                .apply_chunk(migration, chunk, action, request, &meta, &mut report)
                .await;
            // Log what each chunk committed as it commits, so a later failure cannot hide it.
            for moved in report.moved[before..].iter().filter(|_| !request.dry_run) {
                tracing::info!(
                    migration = %migration,
                    tenant = %moved.tenant,
                    action = %moved.action,
                    from = %moved.from.phase,
                    to = %moved.to_phase,
                    paused = moved.to_paused,
                    forced = moved.forced.len(),
                    actor = %request.actor,
                    "phase change"
                );
            }
            if let Err(cause) = result {
                if report.moved.is_empty() || request.dry_run {
                    return Err(cause);
                }
                return Err(EngineError::Interrupted {
                    changed: report.moved.len(),
                    cause: Box::new(cause),
                });
            }
            done += chunk.len();
            progress(done, tenants.len());
        }
        Ok(report)
    }

    async fn apply_chunk(
        &self,
        migration: &MigrationId,
        chunk: &[TenantRecord],
        action: Action,
        request: &Request,
        meta: &AuditMeta,
        report: &mut RolloutReport,
    ) -> Result<(), EngineError> {
        let facts = self
            .store
            .guard_facts(migration, chunk, self.settings.router_lease)
            .await?;
        let mut changes = Vec::new();
        let mut forced = Vec::new();
        for (record, facts) in chunk.iter().zip(&facts) {
            match plan_change(record, facts, action, request) {
                Ok((change, overridden)) => {
                    changes.push(change);
                    forced.push(overridden);
                }
                Err(reason) => report.refused.push(Refused {
                    tenant: record.tenant.clone(),
                    reason,
                }),
            }
        }
        if request.dry_run {
            for (change, forced) in changes.iter().zip(forced) {
                report.moved.push(moved(change, forced, 0));
            }
            return Ok(());
        }
        if !changes.is_empty() {
            ferry_crash::crash_point!("phase_change");
        }
        let applied = self.store.apply_changes(migration, &changes, meta).await?;
        if !applied.applied.is_empty() {
            // Committed: what follows (the report, the operator log, the wait for routers)
            // may be lost to a crash, the change may not.
            ferry_crash::crash_point!("phase_change_committed");
        }
        let applied_set: HashSet<&TenantId> = applied.applied.iter().collect();
        for (change, forced) in changes.iter().zip(forced) {
            if applied_set.contains(&change.tenant) {
                report
                    .moved
                    .push(moved(change, forced, applied.change_version));
            } else {
                report.refused.push(Refused {
                    tenant: change.tenant.clone(),
                    reason: Refusal::Conflict,
                });
            }
        }
        Ok(())
    }

    /// Which live routers have not yet acknowledged `change_version`.
    pub async fn acknowledgement(
        &self,
        change_version: i64,
    ) -> Result<Acknowledgement, StoreError> {
        let routers = self.store.routers(self.settings.router_lease).await?;
        Ok(Acknowledgement {
            change_version,
            lagging: routers
                .into_iter()
                .filter(|r| r.live && r.seen_version < change_version)
                .map(|r| r.id.to_string())
                .collect(),
        })
    }

    /// Waits up to `timeout` for every live router to acknowledge `change_version`.
    /// Returns the last observation: check [`Acknowledgement::effective`].
    pub async fn wait_acknowledged(
        &self,
        change_version: i64,
        timeout: Duration,
    ) -> Result<Acknowledgement, StoreError> {
        let now = tokio::time::Instant::now();
        // A huge --wait must not overflow the clock; a day is "forever" here.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        loop {
            let ack = self.acknowledgement(change_version).await?;
            if ack.effective() || tokio::time::Instant::now() >= deadline {
                return Ok(ack);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Plans and checks one tenant's change against its guard facts: the change to persist and
/// the failed guards `--force` overrode, or why the tenant is refused.
fn plan_change(
    record: &TenantRecord,
    facts: &GuardFacts,
    action: Action,
    request: &Request,
) -> Result<(PhaseChange, Vec<GuardFailure>), Refusal> {
    if let Some(expected) = request.expect_phase.filter(|p| *p != record.state.phase) {
        return Err(Refusal::UnexpectedPhase {
            expected,
            actual: record.state.phase,
        });
    }
    let checked = Transition::plan(record.state, action)
        .and_then(|t| t.check(facts, request.force))
        .map_err(Refusal::Transition)?;
    let change = PhaseChange {
        tenant: record.tenant.clone(),
        action,
        expected_version: record.state.version,
        from: record.state,
        to_phase: checked.transition.to_phase,
        to_paused: checked.transition.to_paused,
        forced_guards: checked.forced.iter().map(|f| f.guard()).collect(),
        recheck_buffer: checked.requires_unforced(Guard::BufferDrained),
        recheck_mismatches: checked.requires_unforced(Guard::NoUnresolvedMismatches),
    };
    Ok((change, checked.forced))
}

/// The report's entry for a planned change, applied (or, in a dry run, as it would be).
fn moved(change: &PhaseChange, forced: Vec<GuardFailure>, change_version: i64) -> Moved {
    Moved {
        tenant: change.tenant.clone(),
        action: change.action,
        from: change.from,
        to_phase: change.to_phase,
        to_paused: change.to_paused,
        forced,
        change_version,
    }
}
