//! The copy loop of one tenant in one direction.
//!
//! ```text
//! checkpoint ─> [controls, phase, backpressure] ─> batch (under the tenant lock in `from`, or
//!     its rows FOR SHARE: inserted into a clear range of `to`, else upserted with a version
//!     guard) ─> validate the batch's key range ─> checkpoint
//! ```
//!
//! Every step is idempotent: a batch repeated after a crash (between the target's commit and
//! the checkpoint) upserts rows that are already there, which changes nothing. Ranges are
//! contiguous from the first key to the last and then to the end, so validation sees every
//! key the target could hold for the tenant.
//!
//! The loop itself is here, as named steps; around it are the operator's `controls`, the
//! `pacing` (backpressure and the pace's share), the `progress` it checkpoints, how a batch
//! runs (`batch_local` in one database, `batch_remote` across two), and the source's
//! retirement after `complete` (`retire`).

use std::ops::ControlFlow;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_domain::{MigrationId, Phase, TenantId};
use ferry_engine::PhaseEngine;
use ferry_store::{BackfillProgress, ControlStore, CopyDirection, MigrationKind};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::backpressure::Verdict;
use crate::config::{SourceLock, TenantMoveConfig};
use crate::error::CopyError;
use crate::plan::{Key, TablePlan};
use crate::sql::Statements;
use crate::validate::{Digest, RangeCheck};
use controls::{Step, rate_limit};
use pacing::Running;
use progress::Run;

mod batch_local;
mod batch_remote;
mod controls;
mod pacing;
mod progress;
mod retire;

/// How a copy run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every row is in the target and every range validated.
    Complete {
        /// Rows this run copied (and checkpointed): a run resumed after a crash counts only
        /// what was left, the tenant's total less `resumed_at`.
        rows: u64,
        repaired: u64,
        mismatches: u64,
        /// Rows already checkpointed when this run started (0 for a copy from the start).
        resumed_at: u64,
    },
    /// The copy had already completed for this phase.
    AlreadyComplete,
    /// An operator paused the tenant or the migration; the checkpoint is kept.
    Paused,
    /// An operator cancelled the copy; the checkpoint is discarded.
    Cancelled,
    /// The tenant is not in a phase where this copy runs (it moved on, or rolled back).
    NotInPhase(Phase),
    /// Some live routers have not acknowledged the phase that makes the copy safe yet.
    WaitingForRouters(Vec<String>),
}

/// Transient failures are retried this many times, with exponential backoff and jitter.
const RETRIES: u32 = 8;

/// What one batch wrote.
struct Copied {
    rows: u64,
    last_key: Key,
    /// `(count, XOR of row hashes)` of the rows as locked and written, when computed.
    digest: Option<Digest>,
}

pub struct Copier {
    pub(crate) store: Arc<dyn ControlStore>,
    engine: PhaseEngine,
    pub(crate) migration: MigrationId,
    pub(crate) config: TenantMoveConfig,
    pub(crate) plan: TablePlan,
    pub(crate) source: PgPool,
    pub(crate) target: PgPool,
    forward: Statements,
    reverse: Statements,
    overwrite: bool,
    /// Both tables live in one database: batches run as one statement, rows never leave it.
    same_database: bool,
    /// Same database, and the server hashes rows: ranges are compared by digest.
    hashing: bool,
    verdict: std::sync::Mutex<Option<(Instant, Verdict)>>,
    /// The pace controller, shared by every tenant being copied (RFC 001).
    pace: crate::pace::Pace,
    /// The latest pace: rows/s for the whole copy, and why it was last cut.
    paced: std::sync::Mutex<(Option<f64>, Option<String>)>,
    /// Copies running now: each gets an equal share of the pace.
    running: std::sync::atomic::AtomicUsize,
    /// The batch size the copies of this run have learned (0 before any): a tenant's copy
    /// starts from it instead of from `start_batch`, so the many small tenants of a skewed
    /// table are not each copied in the small steps of a cold start.
    learned_batch: std::sync::atomic::AtomicU64,
    /// Rows/s of the copies running now (their last batches), summed.
    observed: std::sync::Mutex<std::collections::HashMap<String, f64>>,
    /// Replicas whose replay delay also holds the copy (given at run time, never stored).
    pub(crate) lag_replicas: Vec<PgPool>,
}

/// Connections with the session settings that make row text identical on both sides, so a
/// checksum compares values, not formatting.
pub async fn connect(url: &str, what: &'static str) -> Result<PgPool, CopyError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| CopyError::Plan(format!("{what} URL {}: {e}", ferry_store::redact_url(url))))?
        .application_name("ferry-copier")
        .options([
            ("timezone", "UTC"),
            ("datestyle", "ISO, YMD"),
            ("intervalstyle", "iso_8601"),
            ("extra_float_digits", "3"),
            ("bytea_output", "hex"),
        ]);
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| CopyError::db(what, e))
}

impl Copier {
    /// Plans the copy of a tenant-move migration between two databases (which may be the
    /// same): reads its config, both catalogues, and refuses tables it cannot copy.
    pub async fn open(
        store: Arc<dyn ControlStore>,
        engine: PhaseEngine,
        migration: &MigrationId,
        source: PgPool,
        target: PgPool,
        create_target: bool,
    ) -> Result<Copier, CopyError> {
        let record = store.migration(migration).await?;
        if record.kind != MigrationKind::TenantMove {
            return Err(CopyError::Plan(format!(
                "migration {migration} is a {} migration; the copier runs tenant_move migrations",
                record.kind.as_str()
            )));
        }
        let config = TenantMoveConfig::from_json(&record.config)?;
        let plan = TablePlan::load(&config.names()?, &source, &target, create_target).await?;
        let same_database = crate::plan::same_database(&source, &target).await?;
        let hashing = same_database
            && plan.probe_row_hash(&source, &plan.source).await
            && plan.probe_row_hash(&target, &plan.target).await;
        let lock = config.copy.source_lock() == SourceLock::Rows;
        let (target_plain, source_plain) = if hashing {
            (
                !crate::plan::rewrites_inserts(&target, &plan.target).await?,
                !crate::plan::rewrites_inserts(&source, &plan.source).await?,
            )
        } else {
            (false, false)
        };
        Ok(Copier {
            same_database,
            hashing,
            verdict: std::sync::Mutex::new(None),
            pace: crate::pace::Pace::default(),
            paced: std::sync::Mutex::new((None, None)),
            running: std::sync::atomic::AtomicUsize::new(0),
            learned_batch: std::sync::atomic::AtomicU64::new(0),
            observed: std::sync::Mutex::new(std::collections::HashMap::new()),
            lag_replicas: Vec::new(),
            forward: Statements::new(&plan, CopyDirection::Forward, lock, hashing, target_plain),
            reverse: Statements::new(&plan, CopyDirection::Reverse, lock, hashing, source_plain),
            store,
            engine,
            migration: migration.clone(),
            config,
            plan,
            source,
            target,
            overwrite: false,
        })
    }

    /// Also hold while any of these replicas (pools on hot standbys of the source or the
    /// target) lags: their replay delay is read with the other signals. Given at run time, so
    /// no replica's URL or credentials are stored in the migration.
    pub fn watch_replicas(mut self, replicas: Vec<PgPool>) -> Self {
        self.lag_replicas = replicas;
        self
    }

    /// Let the copy replace rows that were in the target, differing from the source, before
    /// it started (otherwise it refuses: see [`CopyError::TargetConflict`]).
    pub fn overwrite(mut self, yes: bool) -> Self {
        self.overwrite = yes;
        self
    }

    /// A tenant this small is copied in one batch: its copy is round trips more than work
    /// (see [`crate::schedule`]).
    pub fn small_tenant_rows(&self) -> u64 {
        self.config.copy.max_batch
    }

    pub(crate) fn same_database(&self) -> bool {
        self.same_database
    }

    pub(crate) fn hashing(&self) -> bool {
        self.hashing
    }

    pub(crate) fn overwrite_allowed(&self) -> bool {
        self.overwrite
    }

    pub fn plan(&self) -> &TablePlan {
        &self.plan
    }

    pub(crate) fn statements(&self, direction: CopyDirection) -> &Statements {
        match direction {
            CopyDirection::Forward => &self.forward,
            CopyDirection::Reverse => &self.reverse,
        }
    }

    pub(crate) fn pools(&self, direction: CopyDirection) -> (&PgPool, &PgPool) {
        match direction {
            CopyDirection::Forward => (&self.source, &self.target),
            CopyDirection::Reverse => (&self.target, &self.source),
        }
    }

    /// Copies the tenant in `direction` from its checkpoint to the end, validating as it goes.
    /// `on_batch` sees the progress after every batch (for progress bars).
    ///
    /// If the tenant's copy epoch changes under the copy (it was rolled back to `legacy` and
    /// moved on again, say, while a batch or a retry was in flight), the store refuses the
    /// copy's next checkpoint and the copy starts over from the new epoch's beginning, so
    /// writes made meanwhile below its old key are copied too (item 5 of the review).
    pub async fn copy(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        mut on_batch: impl FnMut(&BackfillProgress),
    ) -> Result<Outcome, CopyError> {
        self.plan.check_tenant(tenant)?;
        const RESTARTS: usize = 3;
        let mut restarts = 0;
        loop {
            match self.copy_epoch(tenant, direction, &mut on_batch).await {
                Err(CopyError::Store(ferry_store::StoreError::ProgressStale {
                    epoch,
                    current,
                    ..
                })) if restarts < RESTARTS => {
                    restarts += 1;
                    tracing::info!(
                        migration = %self.migration, tenant = %tenant, direction = direction.as_str(),
                        epoch, current, "the tenant's copy epoch changed under the copy; starting over"
                    );
                }
                other => return other,
            }
        }
    }

    /// One copy within one copy epoch of the tenant.
    async fn copy_epoch(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        on_batch: &mut impl FnMut(&BackfillProgress),
    ) -> Result<Outcome, CopyError> {
        let progress = match self.resume(tenant, direction).await? {
            ControlFlow::Continue(progress) => progress,
            ControlFlow::Break(outcome) => return Ok(outcome),
        };
        let (from, to) = self.pools(direction);
        let mut sizer = self.sizer_for(&progress);
        let mut last_batch: Option<Duration> = None;
        let _running = Running::enter(self, tenant);
        let mut run = Run::new(progress);
        loop {
            let control = match self.controls(tenant, direction).await? {
                Step::Go(control) => control,
                Step::Stop(outcome) => {
                    return self
                        .stop(tenant, direction, &mut run.progress, outcome)
                        .await;
                }
            };
            if self
                .hold(tenant, from, to, &mut run.progress, last_batch)
                .await?
            {
                last_batch = None;
                continue;
            }
            let share = self.pace_share(tenant, &mut run.progress);
            let batch_started = Instant::now();
            let limit = self.batch_limit(&sizer, share);
            let lower = run.progress.last_key.clone();
            ferry_crash::crash_point!("copy_batch_start");
            let copied = self
                .retrying("copy a batch", || {
                    self.copy_batch(tenant, direction, lower.as_ref(), limit)
                })
                .await?;
            let Some(Copied {
                rows,
                last_key,
                digest,
            }) = copied
            else {
                // The end: validate the tail, where only extras can be.
                let check = self
                    .retrying("validate the tail", || {
                        self.validate_range(tenant, direction, lower.as_ref(), None, None)
                    })
                    .await?;
                run.tally(&check);
                return self.finish(&mut run, on_batch).await;
            };
            // The batch is committed in the destination; its checkpoint is not written yet, so
            // a crash from here until the checkpoint repeats it (which changes nothing).
            match direction {
                CopyDirection::Forward => ferry_crash::crash_point!("copy_after_commit"),
                CopyDirection::Reverse => ferry_crash::crash_point!("rollback_walk"),
            }
            // A short batch reached the end: validate through the tail (where only extras
            // can be) at once, instead of another empty batch and another range.
            let last = rows < limit;
            let upper = (!last).then_some(&last_key);
            let check = self
                .validate_batch(tenant, direction, lower.as_ref(), upper, digest)
                .await?;
            run.tally(&check);
            let took = batch_started.elapsed();
            last_batch = Some(took);
            self.learn(tenant, &mut sizer, rows, limit, took);
            rate_limit(&control, self.config.copy.rate_limit, share, rows, took).await;
            run.advance(rows, last_key, sizer.size(), last);
            self.checkpoint(tenant, direction, &run, rows, took, &check)
                .await?;
            ferry_crash::crash_point!("copy_after_checkpoint");
            on_batch(&run.progress);
            if last {
                return Ok(run.outcome());
            }
        }
    }

    /// Validates the range a batch just copied, `(lower, upper]`.
    async fn validate_batch(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        lower: Option<&Key>,
        upper: Option<&Key>,
        digest: Option<Digest>,
    ) -> Result<RangeCheck, CopyError> {
        // With the source locked (its rows, or the tenant against deletes), the batch's own
        // digest is the source side: only a dual write, which writes both sides, can have
        // changed a row since, and that shows as a difference the second look settles.
        // Unlocked, a raced delete can be written back and match the batch's digest, so
        // the source is read again.
        let expected = digest.filter(|_| self.config.copy.source_lock() != SourceLock::None);
        self.retrying("validate a batch", || {
            self.validate_range(tenant, direction, lower, upper, expected)
        })
        .await
    }

    /// One batch: lock the next rows in `from`, upsert them into `to`, then release.
    async fn copy_batch(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        after: Option<&Key>,
        limit: u64,
    ) -> Result<Option<Copied>, CopyError> {
        let sql = self.statements(direction);
        let (from, to) = self.pools(direction);
        if self.same_database {
            return self.copy_batch_local(sql, from, tenant, after, limit).await;
        }
        self.copy_batch_remote(sql, from, to, tenant, after, limit)
            .await
    }

    /// Holds the tenant lock shared until `tx` ends, when the copy closes race 2 with it
    /// ([`crate::tenant_lock`]); taken before any statement of the batch takes its snapshot.
    async fn lock_tenant(
        &self,
        tx: &mut sqlx::PgConnection,
        tenant: &TenantId,
    ) -> Result<(), sqlx::Error> {
        if self.config.copy.source_lock() == SourceLock::Tenant {
            crate::tenant_lock::take(tx, &self.migration, tenant, true).await?;
        }
        Ok(())
    }

    pub(crate) async fn count(
        &self,
        pool: &PgPool,
        sql: &Arc<str>,
        tenant: &TenantId,
    ) -> Result<u64, CopyError> {
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql.clone()))
            .bind(tenant.as_str())
            .fetch_one(pool)
            .await
            .map_err(|e| CopyError::db("count rows", e))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Runs `op`, retrying transient database failures with exponential backoff and jitter.
    pub(crate) async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, CopyError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, CopyError>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && attempt < RETRIES => {
                    attempt += 1;
                    let base = Duration::from_millis(100 * 2u64.pow(attempt.min(6)));
                    let jitter =
                        Duration::from_millis(u64::from(std::process::id() ^ attempt) % 100);
                    tracing::warn!(migration = %self.migration, attempt, "failed to {what}, retrying: {e}");
                    tokio::time::sleep(base + jitter).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
