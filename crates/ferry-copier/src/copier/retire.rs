//! After `complete`, the source's copy of the tenant is dead weight: it is deleted in batches
//! held back like the copy's (controls, backpressure, rate limit), and only once every
//! router has stopped reading it.

use std::time::{Duration, Instant};

use ferry_domain::{Phase, TenantId};
use sqlx::AssertSqlSafe;

use super::Copier;
use super::controls::rate_limit;
use crate::backpressure::Verdict;
use crate::batch::BatchSizer;
use crate::error::CopyError;

impl Copier {
    /// After `complete`: deletes the tenant's rows from the source in throttled batches.
    /// Returns how many were deleted.
    pub async fn retire_source(
        &self,
        tenant: &TenantId,
        mut on_batch: impl FnMut(u64),
    ) -> Result<u64, CopyError> {
        self.plan.check_tenant(tenant)?;
        let record = self.store.tenant(&self.migration, tenant).await?;
        if record.state.phase != Phase::Complete {
            return Err(CopyError::Plan(format!(
                "tenant {tenant} is in {}; its source rows are deleted only once it is complete",
                record.state.phase
            )));
        }
        let ack = self
            .engine
            .acknowledgement(record.changed_at_version)
            .await?;
        if !ack.effective() {
            return Err(CopyError::Plan(format!(
                "routers {} have not yet acknowledged that {tenant} is complete; retry once they have",
                ack.lagging.join(", ")
            )));
        }
        let sql = &self.forward.delete_batch_source;
        let mut deleted = 0;
        let mut sizer = BatchSizer::new(
            self.config.copy.start_batch,
            self.config.copy.min_batch,
            self.config.copy.max_batch,
            self.config.target_batch(),
        );
        loop {
            let control = self.store.control(&self.migration, Some(tenant)).await?;
            if control.paused || control.cancelled {
                return Ok(deleted);
            }
            if let Verdict::Hold(why) = self.external_verdict(&self.source, &self.target).await {
                tracing::info!(migration = %self.migration, tenant = %tenant, reason = %why, "source retirement holding");
                tokio::time::sleep(Duration::from_millis(self.config.backpressure.hold_poll_ms))
                    .await;
                continue;
            }
            let started = Instant::now();
            let limit = sizer.size();
            let n = self
                .retrying("delete source rows", || async {
                    sqlx::query(AssertSqlSafe(sql.clone()))
                        .bind(tenant.as_str())
                        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                        .execute(&self.source)
                        .await
                        .map(|r| r.rows_affected())
                        .map_err(|e| CopyError::db("delete source rows", e))
                })
                .await?;
            if n == 0 {
                return Ok(deleted);
            }
            deleted += n;
            on_batch(deleted);
            let took = started.elapsed();
            sizer.observe(n, took);
            rate_limit(&control, self.config.copy.rate_limit, None, n, took).await;
        }
    }
}
