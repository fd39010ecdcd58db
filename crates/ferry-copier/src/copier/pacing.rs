//! How fast one copy goes, among the many running at once: the databases' backpressure
//! verdict (cached, shared by every copy), the pace controller's rows/s split into equal
//! shares, and the batch size each copy learns and passes on to the next. Holding and
//! pacing are said in the progress, so an operator sees why a copy is slow.

use std::time::{Duration, Instant};

use ferry_domain::TenantId;
use ferry_store::BackfillProgress;
use sqlx::postgres::PgPool;

use super::Copier;
use crate::backpressure::{self, Verdict};
use crate::batch::BatchSizer;
use crate::error::CopyError;

/// How long a backpressure verdict stands before the signals are read again.
const SIGNAL_TTL: Duration = Duration::from_millis(250);

impl Copier {
    /// The databases' verdict, read at most every [`SIGNAL_TTL`] however many tenants are
    /// copying at once: probes are cheap, but not free on a database under strain.
    pub(super) async fn external_verdict(&self, from: &PgPool, to: &PgPool) -> Verdict {
        if let Some((at, verdict)) = self.verdict.lock().expect("verdict cache").clone()
            && at.elapsed() < SIGNAL_TTL
        {
            return verdict;
        }
        if self.config.backpressure.latency_factor > 0.0 && self.pace.baseline().is_none() {
            // Before the first batch: what the application's own load makes a probe take.
            let (mut source, mut target) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let (s, t) = tokio::join!(
                    backpressure::commit_time(from),
                    backpressure::commit_time(to)
                );
                source.push(s);
                target.push(t);
            }
            self.pace.set_baseline(crate::pace::Baseline {
                source: crate::pace::median(source),
                target: crate::pace::median(target),
            });
        }
        let signals = backpressure::read(
            from,
            to,
            &self.lag_replicas,
            &self.config.backpressure,
            None,
        )
        .await;
        let verdict = backpressure::judge(
            &signals,
            &self.config.backpressure,
            self.config.target_batch(),
        );
        let observed: f64 = self
            .observed
            .lock()
            .map(|o| o.values().sum())
            .unwrap_or(0.0);
        let paced = if self.config.backpressure.latency_factor > 0.0 {
            let (source, target) = tokio::join!(
                backpressure::commit_time(from),
                backpressure::commit_time(to)
            );
            self.pace
                .observe(&self.config.backpressure, source, target, observed)
        } else {
            (None, None)
        };
        if let Ok(mut p) = self.paced.lock() {
            *p = paced;
        }
        *self.verdict.lock().expect("verdict cache") = Some((Instant::now(), verdict.clone()));
        verdict
    }

    /// How many tenants to copy at once, out of `parallel`: fewer after the pace controller
    /// cut the rate twice in a row, back up when calm (RFC 001, step 4).
    pub fn concurrency(&self, parallel: usize) -> usize {
        self.pace.concurrency(parallel)
    }

    /// The batch sizer a copy starts with: its checkpoint's size when resuming, else the
    /// size the copies of this run have learned, else the configured start.
    pub(super) fn sizer_for(&self, progress: &BackfillProgress) -> BatchSizer {
        let settings = &self.config.copy;
        let learned = self
            .learned_batch
            .load(std::sync::atomic::Ordering::Relaxed);
        BatchSizer::new(
            if progress.batch_size > 0 {
                progress.batch_size
            } else if learned > 0 {
                learned
            } else {
                settings.start_batch
            },
            settings.min_batch,
            settings.max_batch,
            self.config.target_batch(),
        )
    }

    /// Backpressure: whether to hold (re-reading the signals next round) rather than copy,
    /// having waited one poll and said why in the progress. The databases' signals are
    /// shared by every tenant being copied; the batch time is this copy's.
    pub(super) async fn hold(
        &self,
        tenant: &TenantId,
        from: &PgPool,
        to: &PgPool,
        progress: &mut BackfillProgress,
        last_batch: Option<Duration>,
    ) -> Result<bool, CopyError> {
        let mut verdict = self.external_verdict(from, to).await;
        if verdict == Verdict::Go
            && let Some(took) = last_batch
        {
            let local = backpressure::Signals {
                last_batch: Some(took),
                ..backpressure::Signals::default()
            };
            verdict = backpressure::judge(
                &local,
                &self.config.backpressure,
                self.config.target_batch(),
            );
        }
        let Verdict::Hold(why) = verdict else {
            return Ok(false);
        };
        if progress.throttled.as_deref() != Some(why.as_str()) {
            tracing::info!(migration = %self.migration, tenant = %tenant, reason = %why, "copier holding");
            progress.throttled = Some(why);
            self.store.record_backfill(progress).await?;
        }
        tokio::time::sleep(Duration::from_millis(self.config.backpressure.hold_poll_ms)).await;
        Ok(true)
    }

    /// This copy's share of the pace (rows/s), if the pace controller limits the copy.
    pub(super) fn pace_share(
        &self,
        tenant: &TenantId,
        progress: &mut BackfillProgress,
    ) -> Option<f64> {
        // The pace controller slows the copy without holding it; say so while it does.
        let (paced, pace_reason) = self.paced.lock().map(|p| p.clone()).unwrap_or_default();
        if progress.throttled != pace_reason {
            progress.throttled = pace_reason;
            if let Some(why) = &progress.throttled {
                tracing::info!(migration = %self.migration, tenant = %tenant, reason = %why, "copier paced");
            }
        }
        paced.map(|p| {
            p / self
                .running
                .load(std::sync::atomic::Ordering::Relaxed)
                .max(1) as f64
        })
    }

    /// The next batch's row limit. Paced, batches shrink to a fifth of a second's share: the
    /// same rows/s as small steps the live load barely feels, not bursts it queues behind.
    pub(super) fn batch_limit(&self, sizer: &BatchSizer, share: Option<f64>) -> u64 {
        match share {
            Some(share) => sizer
                .size()
                .min((share / 5.0).max(self.config.copy.min_batch as f64) as u64),
            None => sizer.size(),
        }
    }

    /// What a batch of `rows` (asked for `limit`) that took `took` teaches: the sizer its
    /// next size, the run its learned size (full batches only), the pace this copy's rows/s.
    pub(super) fn learn(
        &self,
        tenant: &TenantId,
        sizer: &mut BatchSizer,
        rows: u64,
        limit: u64,
        took: Duration,
    ) {
        let size = sizer.observe(rows, took);
        if rows >= limit {
            self.learned_batch
                .store(size, std::sync::atomic::Ordering::Relaxed);
        }
        if let Ok(mut o) = self.observed.lock() {
            o.insert(
                tenant.to_string(),
                rows as f64 / took.as_secs_f64().max(1e-6),
            );
        }
    }
}

/// Counts a copy as running (for the pace's shares) until dropped.
pub(super) struct Running<'a> {
    copier: &'a Copier,
    tenant: String,
}

impl<'a> Running<'a> {
    pub(super) fn enter(copier: &'a Copier, tenant: &TenantId) -> Running<'a> {
        copier
            .running
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Running {
            copier,
            tenant: tenant.to_string(),
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.copier
            .running
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut o) = self.copier.observed.lock() {
            o.remove(&self.tenant);
        }
    }
}
