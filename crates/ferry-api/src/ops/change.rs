//! Phase changes, of one tenant or a whole cohort. The engine decides; the operator log
//! records the call as soon as the engine has answered (a committed change stands whatever
//! happens next), and only then does the call wait for the routers to acknowledge it.

use std::time::Duration;

use ferry_domain::{Action, Cohort, MigrationId, Phase, TenantId};
use ferry_engine::{Request, RolloutReport};

use super::{Operations, Result, Summary};
use crate::{OpsError, RolloutView};

/// How a phase change is asked for.
#[derive(Debug, Clone, Default)]
pub struct ChangeOptions {
    /// Why, for the audit log. Required with `force`.
    pub reason: String,
    /// Override failed guards (each one is recorded).
    pub force: bool,
    /// Check and report, change nothing.
    pub dry_run: bool,
    /// Act only on tenants currently in this phase.
    pub from_phase: Option<Phase>,
    /// How long to wait for every live router to acknowledge before answering.
    pub wait: Duration,
}

impl Operations {
    /// One phase change of one tenant; a refusal is `OpsError::Refused`.
    pub async fn change(
        &self,
        actor: &str,
        migration: &MigrationId,
        tenant: &TenantId,
        action: Action,
        options: &ChangeOptions,
    ) -> Result<RolloutView> {
        let target = format!("{migration}/{tenant}");
        let changed = self
            .engine
            .change(migration, tenant, action, &request(actor, options))
            .await
            .map_err(OpsError::from)
            .map(|moved| RolloutReport {
                moved: vec![moved],
                refused: vec![],
            });
        self.committed(
            actor,
            action.as_str(),
            &target,
            migration,
            action,
            options,
            changed,
        )
        .await
    }

    /// One action over a cohort; tenants whose guards refuse are listed, not an error.
    pub async fn rollout(
        &self,
        actor: &str,
        migration: &MigrationId,
        cohort: &Cohort,
        action: Action,
        options: &ChangeOptions,
        progress: impl FnMut(usize, usize),
    ) -> Result<RolloutView> {
        let changed = self
            .engine
            .rollout(
                migration,
                cohort,
                action,
                &request(actor, options),
                progress,
            )
            .await
            .map_err(OpsError::from);
        let operation = format!("rollout.{}", action.as_str());
        self.committed(
            actor,
            &operation,
            migration.as_str(),
            migration,
            action,
            options,
            changed,
        )
        .await
    }

    /// After the engine answered: log the call at once (the change is committed whatever
    /// happens next), then wait for the routers. A failure while waiting does not turn a
    /// committed change into an error; the routers are reported as not yet acknowledged.
    #[allow(clippy::too_many_arguments)]
    async fn committed(
        &self,
        actor: &str,
        operation: &str,
        target: &str,
        migration: &MigrationId,
        action: Action,
        options: &ChangeOptions,
        changed: Result<RolloutReport>,
    ) -> Result<RolloutView> {
        let report = match changed {
            Ok(report) => report,
            Err(e) => {
                let failed: Result<RolloutView> = Err(e);
                self.log(actor, operation, target, options.dry_run, &failed)
                    .await;
                return failed;
            }
        };
        let view = RolloutView::build(action, options.dry_run, &report, vec![]);
        self.log(actor, operation, target, options.dry_run, &Ok(view.clone()))
            .await;
        if options.dry_run {
            return Ok(view);
        }
        for m in &report.moved {
            metrics::counter!(
                "ferry_phase_changes_total",
                "migration" => migration.to_string(),
                "action" => action.as_str(),
                "to_phase" => m.to_phase.as_str(),
            )
            .increment(1);
        }
        let version = report.change_version();
        if version == 0 {
            return Ok(view);
        }
        let pending = match self.engine.wait_acknowledged(version, options.wait).await {
            Ok(ack) => ack.lagging,
            Err(e) => {
                tracing::warn!(%migration, version, "could not check the routers' acknowledgement: {e}");
                vec![format!("unknown (could not read the routers: {e})")]
            }
        };
        Ok(RolloutView::build(action, false, &report, pending))
    }
}

fn request(actor: &str, options: &ChangeOptions) -> Request {
    Request {
        actor: actor.to_owned(),
        reason: options.reason.clone(),
        force: options.force,
        dry_run: options.dry_run,
        expect_phase: options.from_phase,
    }
}

impl Summary for RolloutView {
    fn summary(&self) -> String {
        let mut out = match self.moved.as_slice() {
            [one] => format!("{} -> {}", one.from, one.to),
            many => format!("moved {}", many.len()),
        };
        if !self.refused.is_empty() {
            out.push_str(&format!(", refused {}", self.refused.len()));
        }
        if self.moved.iter().any(|m| !m.forced.is_empty()) {
            out.push_str(", forced");
        }
        out
    }
}
