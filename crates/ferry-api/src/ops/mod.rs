//! Every operator query and action, implemented once. The CLI prints what these return; the
//! admin API serializes it. Each mutating call appends one entry to the operator log (who,
//! what, on what, and what came of it, refusals and failures included).
//!
//! The queries live here; the actions live in one submodule per noun (`change`, `buffer`,
//! `copy`, `token`), each with the one-line `Summary` its log entries carry.

mod buffer;
mod change;
mod copy;
mod token;

use std::sync::Arc;

use ferry_domain::{Action, MigrationId, TenantId, Transition};
use ferry_engine::{EngineSettings, PhaseEngine};
use ferry_store::{ControlStore, NewOperation, TenantQuery};

use crate::{
    AuditView, BufferView, CopyProgressView, MigrationDetail, MigrationFacts, MigrationView,
    OperationView, OpsError, RouterView, Status, TenantDetail, TenantView,
};

pub use change::ChangeOptions;
pub use copy::CopyChange;

type Result<T> = std::result::Result<T, OpsError>;

/// The most entries one page of a list may hold.
pub const MAX_PAGE: u64 = 10_000;

pub struct Operations {
    store: Arc<dyn ControlStore>,
    engine: PhaseEngine,
}

impl Operations {
    pub fn new(store: Arc<dyn ControlStore>) -> Operations {
        Operations {
            engine: PhaseEngine::new(store.clone(), EngineSettings::default()),
            store,
        }
    }

    pub fn store(&self) -> &Arc<dyn ControlStore> {
        &self.store
    }

    pub fn engine(&self) -> &PhaseEngine {
        &self.engine
    }

    // --- queries ---

    /// Every migration (or one) with its tenants per phase, buffer, mismatches, copies and
    /// route decisions, plus the routers.
    pub async fn status(&self, only: Option<&MigrationId>) -> Result<Status> {
        let mut migrations = self.store.migrations().await?;
        if let Some(only) = only {
            self.store.migration(only).await?;
            migrations.retain(|m| &m.id == only);
        }
        let counts = self.store.status().await?;
        let mut facts = Vec::with_capacity(migrations.len());
        for m in &migrations {
            facts.push(MigrationFacts {
                health: self.store.migration_health(&m.id).await?,
                progress: self.store.progress(&m.id, None).await?,
            });
        }
        let route_counts = self.store.route_counts().await?;
        let routers = self
            .store
            .routers(ferry_store::DEFAULT_ROUTER_LEASE)
            .await?;
        let version = self.store.change_version().await?;
        Ok(Status::build(
            self.store.describe(),
            version,
            &migrations,
            &counts,
            &facts,
            &route_counts,
            &routers,
        ))
    }

    pub async fn migrations(&self) -> Result<Vec<MigrationView>> {
        let all = self.store.migrations().await?;
        Ok(all.iter().map(MigrationView::from).collect())
    }

    pub async fn migration(&self, id: &MigrationId) -> Result<MigrationDetail> {
        let migration = self.store.migration(id).await?;
        let mut status = self.status(Some(id)).await?;
        let status = status.migrations.pop().ok_or_else(|| {
            OpsError::Internal(format!("migration {id} vanished while reading it"))
        })?;
        Ok(MigrationDetail {
            migration: MigrationView::from(&migration),
            status,
        })
    }

    pub async fn tenants(
        &self,
        migration: &MigrationId,
        query: &TenantQuery,
    ) -> Result<Vec<TenantView>> {
        if query.limit == Some(0) {
            return Err(OpsError::Invalid("limit must be at least 1".into()));
        }
        let tenants = self.store.tenants(migration, query).await?;
        if tenants.is_empty() {
            // "No such migration" is not "no tenants match".
            self.store.migration(migration).await?;
        }
        Ok(tenants.iter().map(TenantView::from).collect())
    }

    /// A tenant and what its next advance waits for.
    pub async fn tenant(&self, migration: &MigrationId, tenant: &TenantId) -> Result<TenantDetail> {
        let record = self.store.tenant(migration, tenant).await?;
        let facts = self
            .store
            .guard_facts(
                migration,
                std::slice::from_ref(&record),
                ferry_store::DEFAULT_ROUTER_LEASE,
            )
            .await?
            .pop()
            .ok_or_else(|| OpsError::Internal("the store returned no guard facts".into()))?;
        let next =
            Transition::plan(record.state, Action::Advance).and_then(|t| t.check(&facts, false));
        let next_text = match &next {
            Ok(c) => format!("-> {} (all guards pass)", c.transition.to_phase),
            Err(e) => format!("blocked: {e}"),
        };
        Ok(TenantDetail::build(&record, &facts, next_text))
    }

    pub async fn history(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<AuditView>> {
        self.store.tenant(migration, tenant).await?;
        let history = self.store.history(migration, tenant).await?;
        Ok(history.iter().map(AuditView::from).collect())
    }

    /// A migration's audit log after `after_seq`; with 0, the most recent `limit` entries.
    pub async fn audit(
        &self,
        migration: &MigrationId,
        after_seq: i64,
        limit: u64,
    ) -> Result<Vec<AuditView>> {
        check_limit(limit)?;
        self.store.migration(migration).await?;
        let page = if after_seq > 0 {
            self.store.audit_log(migration, after_seq, limit).await?
        } else {
            self.store.recent_audit(migration, limit).await?
        };
        Ok(page.iter().map(AuditView::from).collect())
    }

    pub async fn progress(&self, migration: &MigrationId) -> Result<Vec<CopyProgressView>> {
        self.store.migration(migration).await?;
        let progress = self.store.progress(migration, None).await?;
        Ok(progress.iter().map(CopyProgressView::from).collect())
    }

    pub async fn buffer(&self, migration: &MigrationId) -> Result<Vec<BufferView>> {
        self.store.migration(migration).await?;
        let open = self.store.open_updates(migration).await?;
        Ok(open.iter().map(BufferView::from).collect())
    }

    pub async fn routers(&self) -> Result<Vec<RouterView>> {
        let routers = self
            .store
            .routers(ferry_store::DEFAULT_ROUTER_LEASE)
            .await?;
        Ok(routers.iter().map(RouterView::from).collect())
    }

    pub async fn operations(&self, after_seq: i64, limit: u64) -> Result<Vec<OperationView>> {
        check_limit(limit)?;
        let ops = self.store.operations(after_seq, limit).await?;
        Ok(ops.iter().map(OperationView::from).collect())
    }

    // --- the operator log, which every action (in the submodules) appends to ---

    /// Appends the operator-log entry of a mutating call. A dry run changes nothing and is
    /// not logged.
    async fn log<T: Summary>(
        &self,
        actor: &str,
        operation: &str,
        target: &str,
        dry_run: bool,
        result: &Result<T>,
    ) {
        if dry_run {
            return;
        }
        let outcome = match result {
            Ok(v) => format!("ok: {}", v.summary()),
            Err(e) => format!("{}: {e}", e.code()),
        };
        let entry = NewOperation {
            actor: actor.to_owned(),
            operation: operation.to_owned(),
            target: target.to_owned(),
            outcome,
        };
        if let Err(e) = self.store.record_operation(&entry).await {
            tracing::error!(
                actor,
                operation,
                target,
                "could not append to the operator log: {e}"
            );
        }
    }
}

fn check_limit(limit: u64) -> Result<()> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(OpsError::Invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(())
}

/// One line for the operator log.
trait Summary {
    fn summary(&self) -> String;
}
