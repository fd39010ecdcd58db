//! The operator's hand on a running copy, read from the control store before every batch:
//! the tenant's phase (a copy runs only in its own), pause and cancel, and the row rate
//! limit. Stopping here is how a paused copy keeps its checkpoint and a cancelled one starts
//! over.

use std::time::Duration;

use ferry_domain::{Phase, TenantId};
use ferry_store::{BackfillProgress, CopyDirection};

use super::{Copier, Outcome};
use crate::error::CopyError;

/// What the controls say before a batch: go on under this control, or stop with this outcome.
pub(super) enum Step {
    Go(ferry_store::CopyControl),
    Stop(Outcome),
}

/// Sleeps as needed so the copy stays under the operator's (or the config's) row rate.
pub(super) async fn rate_limit(
    control: &ferry_store::CopyControl,
    configured: Option<u64>,
    paced: Option<f64>,
    rows: u64,
    took: Duration,
) {
    let limit = [
        control.rate_limit.map(|l| l as f64),
        configured.map(|l| l as f64),
        paced,
    ]
    .into_iter()
    .flatten()
    .filter(|l| *l > 0.0)
    .reduce(f64::min);
    if let Some(limit) = limit {
        let minimum = Duration::from_secs_f64(rows as f64 / limit);
        if minimum > took {
            tokio::time::sleep(minimum - took).await;
        }
    }
}

impl Copier {
    /// The phases in which a copy in `direction` runs.
    pub(super) fn runs_in(direction: CopyDirection, phase: Phase) -> bool {
        match direction {
            CopyDirection::Forward => matches!(phase, Phase::DualWrite | Phase::Shadow),
            CopyDirection::Reverse => phase == Phase::TargetPrimary,
        }
    }

    /// Checks controls and phase: stop with an outcome, or go on under a control.
    pub(super) async fn controls(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
    ) -> Result<Step, CopyError> {
        let record = self.store.tenant(&self.migration, tenant).await?;
        if !Self::runs_in(direction, record.state.phase) {
            return Ok(Step::Stop(Outcome::NotInPhase(record.state.phase)));
        }
        let control = self.store.control(&self.migration, Some(tenant)).await?;
        if control.cancelled {
            return Ok(Step::Stop(Outcome::Cancelled));
        }
        if control.paused || record.state.paused {
            return Ok(Step::Stop(Outcome::Paused));
        }
        Ok(Step::Go(control))
    }

    /// Ends a copy the controls stopped: a pause keeps the checkpoint (saying why), a cancel
    /// discards it.
    pub(super) async fn stop(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        progress: &mut BackfillProgress,
        outcome: Outcome,
    ) -> Result<Outcome, CopyError> {
        match outcome {
            Outcome::Paused => {
                progress.throttled = Some("paused by an operator".into());
                self.store.record_backfill(progress).await?;
            }
            Outcome::Cancelled => {
                self.forget_checkpoint(tenant, direction, progress.epoch)
                    .await?
            }
            // Not in a phase where this copy runs: its progress is not accepted.
            _ => {}
        }
        Ok(outcome)
    }
}
