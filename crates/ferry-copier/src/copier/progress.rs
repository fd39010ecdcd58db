//! The copy's checkpoint in the control store: where a copy resumes (or why it does not
//! run), what its first start checks, and the progress each batch records after the target
//! commits, so a crash repeats at most one batch and an operator sees how far it got.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use ferry_domain::{Phase, TenantId};
use ferry_store::{BackfillProgress, CopyDirection};

use super::{Copier, Outcome};
use crate::error::CopyError;
use crate::plan::Key;
use crate::validate::RangeCheck;

/// One run of a copy: the checkpoint it advances, and what its validations found.
pub(super) struct Run {
    pub(super) progress: BackfillProgress,
    repaired: u64,
    mismatches: u64,
    started: Instant,
    rows_at_start: u64,
}

impl Run {
    pub(super) fn new(progress: BackfillProgress) -> Run {
        Run {
            repaired: 0,
            mismatches: 0,
            started: Instant::now(),
            rows_at_start: progress.rows_done,
            progress,
        }
    }

    pub(super) fn tally(&mut self, check: &RangeCheck) {
        self.repaired += check.repaired;
        self.mismatches += check.mismatches;
    }

    /// A batch of `rows` up to `last_key` in the progress, with the sizer's next size and
    /// the run's rate; the `last` batch completes the copy.
    pub(super) fn advance(&mut self, rows: u64, last_key: Key, batch_size: u64, last: bool) {
        let progress = &mut self.progress;
        progress.rows_done += rows;
        progress.rows_total = progress.rows_total.max(progress.rows_done);
        progress.last_key = Some(last_key);
        progress.batch_size = batch_size;
        let elapsed = self.started.elapsed().as_secs_f64();
        progress.rows_per_s = if elapsed > 0.0 {
            (progress.rows_done - self.rows_at_start) as f64 / elapsed
        } else {
            0.0
        };
        if last {
            progress.complete = true;
            progress.throttled = None;
        }
    }

    pub(super) fn outcome(&self) -> Outcome {
        Outcome::Complete {
            rows: self.progress.rows_done - self.rows_at_start,
            repaired: self.repaired,
            mismatches: self.mismatches,
            resumed_at: self.rows_at_start,
        }
    }
}

impl Copier {
    /// Where the copy starts: the checkpoint to continue from (a fresh one on the first
    /// start), or why it does not run now.
    pub(super) async fn resume(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
    ) -> Result<ControlFlow<Outcome, BackfillProgress>, CopyError> {
        let record = self.store.tenant(&self.migration, tenant).await?;
        if !Self::runs_in(direction, record.state.phase) {
            return Ok(ControlFlow::Break(Outcome::NotInPhase(record.state.phase)));
        }
        // Copying is safe only once every router writes both sides: a router still on the
        // previous phase could write one side after the copier passed that key.
        let ack = self
            .engine
            .acknowledgement(record.changed_at_version)
            .await?;
        if !ack.effective() {
            return Ok(ControlFlow::Break(Outcome::WaitingForRouters(ack.lagging)));
        }
        let existing = self
            .store
            .progress(&self.migration, Some(tenant))
            .await?
            .into_iter()
            .find(|p| p.direction == direction);
        let control = self.store.control(&self.migration, Some(tenant)).await?;
        let epoch = record.copy_epoch;
        if control.cancelled {
            self.forget_checkpoint(tenant, direction, epoch).await?;
            return Ok(ControlFlow::Break(Outcome::Cancelled));
        }
        // A checkpoint of an earlier epoch is never continued from (the store no longer
        // keeps one, but a copy must not rely on that alone).
        let existing = existing.filter(|p| p.epoch == epoch);
        let starting = existing.is_none();
        let mut progress = match existing {
            Some(p) if p.complete => return Ok(ControlFlow::Break(Outcome::AlreadyComplete)),
            Some(p) => p,
            None => BackfillProgress {
                epoch,
                ..BackfillProgress::new(self.migration.clone(), tenant.clone(), direction)
            },
        };
        // Only the very first start looks for someone else's rows: after a crash, rows the
        // copy itself wrote (or a raced delete it wrote back) must not look like theirs.
        if starting {
            self.first_start(tenant, direction, record.rows, &mut progress)
                .await?;
        }
        Ok(ControlFlow::Continue(progress))
    }

    /// The very first start: looks for someone else's rows in the destination, and records
    /// the tenant's size (`registered` rows, if the tenant's record has them) as the total.
    async fn first_start(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        registered: u64,
        progress: &mut BackfillProgress,
    ) -> Result<(), CopyError> {
        // Rows left in the target by an earlier attempt (rolled back to legacy since) are
        // Ferry's own, stale, and simply overwritten; before the first attempt, rows
        // there are someone else's.
        let earlier_attempt = self
            .store
            .history(&self.migration, tenant)
            .await?
            .iter()
            .any(|e| e.action == ferry_domain::Action::Rollback && e.to_phase == Phase::Legacy);
        if !earlier_attempt {
            self.check_target_conflicts(tenant, direction).await?;
        }
        // The registered size is the estimate; counting would read the tenant once more.
        progress.rows_total = if registered > 0 {
            registered
        } else {
            let (from, _) = self.pools(direction);
            self.count(from, &self.statements(direction).count_from, tenant)
                .await?
        };
        self.store.record_backfill(progress).await?;
        Ok(())
    }

    /// Records a batch's progress (after the target committed it) and says so.
    pub(super) async fn checkpoint(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        run: &Run,
        rows: u64,
        took: Duration,
        check: &RangeCheck,
    ) -> Result<(), CopyError> {
        let progress = &run.progress;
        self.store.record_backfill(progress).await?;
        tracing::info!(
            migration = %self.migration, tenant = %tenant, direction = direction.as_str(),
            rows, batch_ms = took.as_millis() as u64, rows_done = progress.rows_done,
            rows_total = progress.rows_total, repaired = check.repaired,
            mismatches = check.mismatches, "batch copied"
        );
        Ok(())
    }

    /// The end of the tenant's rows, the tail validated: the copy is complete.
    pub(super) async fn finish(
        &self,
        run: &mut Run,
        on_batch: &mut impl FnMut(&BackfillProgress),
    ) -> Result<Outcome, CopyError> {
        let progress = &mut run.progress;
        progress.complete = true;
        progress.rows_total = progress.rows_total.max(progress.rows_done);
        progress.throttled = None;
        self.store.record_backfill(progress).await?;
        on_batch(progress);
        Ok(run.outcome())
    }

    /// A cancelled copy starts over: its progress is replaced by a fresh one (of the same
    /// epoch).
    pub(super) async fn forget_checkpoint(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        epoch: i64,
    ) -> Result<(), CopyError> {
        let fresh = BackfillProgress {
            epoch,
            ..BackfillProgress::new(self.migration.clone(), tenant.clone(), direction)
        };
        self.store.record_backfill(&fresh).await?;
        Ok(())
    }
}
