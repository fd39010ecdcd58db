//! Archiving: a tenant's rows past the cutoff become segments. The rows are read and uploaded
//! without a lock, then compared with the hot table again under the tenant's exclusive lock
//! and committed there, so a row changed meanwhile reaches the cold tier through the buffer
//! instead of leaving a stale image in it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use ferry_domain::{Phase, TenantId};
use ferry_store::{CopyDirection, NewSegment, Requeue, SegmentCommit, SegmentRecord};

use crate::error::TierError;
use crate::key::{RowKey, key_at};
use crate::segment::key_columns;

use super::{Tiering, err_store, key_text};

/// Rows per segment an archive run writes at most.
pub const SEGMENT_ROWS: usize = 256 * 1024;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveReport {
    pub rows: u64,
    pub segments: u64,
    /// Rows changed by a writer while they were being archived, re-sent through the buffer.
    pub requeued: u64,
    /// Archiving did not run: the reason (a buffer over its thresholds).
    pub paused: Option<String>,
    /// Where the time went: reading the hot rows, encoding and uploading the segments, and
    /// the locked compare-and-commit.
    pub read: Duration,
    pub write: Duration,
    pub commit: Duration,
}

impl Tiering {
    /// The rows of `batch` whose key no live segment holds yet: a row archived before and
    /// since moved into a later window (its age column changed) stays where it is, and its
    /// changes reach it through the buffer. Returns the kept rows' indexes.
    async fn not_yet_archived(
        &self,
        segments: &[SegmentRecord],
        batch: &RecordBatch,
    ) -> Result<Vec<usize>, TierError> {
        let columns = key_columns(self.decl());
        let mut keep = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let Some(key) = key_at(self.decl(), batch, &columns, row) else {
                keep.push(row);
                continue;
            };
            let mut archived = false;
            for s in segments {
                if self.covers(s, &key)?
                    && self
                        .cold
                        .lookup(self.decl(), &Self::path(s), &key)
                        .await?
                        .is_some()
                {
                    archived = true;
                    break;
                }
            }
            if !archived {
                keep.push(row);
            }
        }
        Ok(keep)
    }

    /// Whether archiving should pause for this tenant: its buffer's depth or age.
    pub async fn buffer_pressure(&self, tenant: &TenantId) -> Result<Option<String>, TierError> {
        let pending = self.pending(tenant).await?;
        let b = &self.config.buffer;
        if pending.len() as u64 > b.max_depth {
            return Ok(Some(format!(
                "update buffer depth {} > {}",
                pending.len(),
                b.max_depth
            )));
        }
        if let Some(oldest) = pending.first() {
            let age = (chrono::Utc::now() - oldest.enqueued_at).num_seconds();
            if age > i64::try_from(b.max_age_s).unwrap_or(i64::MAX) {
                return Ok(Some(format!(
                    "oldest buffered change {age}s > {}s",
                    b.max_age_s
                )));
            }
        }
        Ok(None)
    }

    /// Archives the tenant's rows with `watermark <= age < cutoff` (RFC 3339), then checks
    /// them against the hot table again: a row a writer changed meanwhile is re-sent through
    /// the update buffer, so the cold tier never keeps a stale image.
    pub async fn archive(
        &self,
        tenant: &TenantId,
        cutoff: &str,
    ) -> Result<ArchiveReport, TierError> {
        self.decl().check_tenant(tenant)?;
        let epoch = self.store.tenant(&self.migration, tenant).await?.copy_epoch;
        if let Some(why) = self.buffer_pressure(tenant).await? {
            tracing::warn!(migration = %self.migration, tenant = %tenant, reason = %why, "archiving paused");
            return Ok(ArchiveReport {
                paused: Some(why),
                ..ArchiveReport::default()
            });
        }
        let from = self
            .store
            .archived_through(&self.migration, tenant)
            .await
            .map_err(err_store)?;
        if from.as_deref().is_some_and(|f| self.not_after(cutoff, f)) {
            return Ok(ArchiveReport::default());
        }
        let started = Instant::now();
        let (batch, versions) = self.read_window(tenant, from.as_deref(), cutoff).await?;
        let mut report = ArchiveReport {
            rows: batch.num_rows() as u64,
            read: started.elapsed(),
            ..ArchiveReport::default()
        };
        let started = Instant::now();
        let add = self.upload_window(tenant, &batch).await?;
        report.segments = add.len() as u64;
        report.write = started.elapsed();
        let started = Instant::now();
        report.requeued = self
            .commit_window(tenant, from.as_deref(), cutoff, &batch, &versions, add)
            .await?;
        report.commit = started.elapsed();
        self.record_progress(tenant, report.rows, epoch).await?;
        tracing::info!(
            migration = %self.migration, tenant = %tenant, rows = report.rows,
            segments = report.segments, requeued = report.requeued,
            read_s = report.read.as_secs_f64(), write_s = report.write.as_secs_f64(),
            commit_s = report.commit.as_secs_f64(), "archived"
        );
        Ok(report)
    }

    /// The window's rows not archived yet, in key order, with their `xmin`.
    async fn read_window(
        &self,
        tenant: &TenantId,
        from: Option<&str>,
        cutoff: &str,
    ) -> Result<(RecordBatch, Vec<String>), TierError> {
        let (batch, versions) = self.hot.window(tenant, from, cutoff).await?;
        let segments = self.segments(tenant).await?;
        let keep = self.not_yet_archived(&segments, &batch).await?;
        if keep.len() == batch.num_rows() {
            return Ok((batch, versions));
        }
        let indices = arrow_array::UInt32Array::from_iter_values(
            keep.iter().map(|&i| u32::try_from(i).unwrap_or(u32::MAX)),
        );
        let taken = arrow_select::take::take_record_batch(&batch, &indices).map_err(|e| {
            TierError::Value {
                column: "*".into(),
                detail: e.to_string(),
            }
        })?;
        let versions = keep.iter().map(|&i| versions[i].clone()).collect();
        Ok((taken, versions))
    }

    /// The window's rows as segments of at most [`SEGMENT_ROWS`], uploaded and read back.
    async fn upload_window(
        &self,
        tenant: &TenantId,
        batch: &RecordBatch,
    ) -> Result<Vec<NewSegment>, TierError> {
        let mut add = Vec::new();
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = SEGMENT_ROWS.min(batch.num_rows() - offset);
            add.push(self.upload(tenant, &batch.slice(offset, len)).await?);
            offset += len;
        }
        Ok(add)
    }

    /// Commits the uploaded segments and the new watermark under the tenant's exclusive lock,
    /// after re-sending through the buffer every row of `archived` (as read, with its `xmin`)
    /// that a writer changed since. Returns how many rows were re-sent.
    async fn commit_window(
        &self,
        tenant: &TenantId,
        from: Option<&str>,
        cutoff: &str,
        archived: &RecordBatch,
        versions: &[String],
        add: Vec<NewSegment>,
    ) -> Result<u64, TierError> {
        // The moment these keys change tier: no write of the tenant is between its location
        // lookup and its hot write while the rows are compared again and the manifest is
        // committed. A row a writer changed since the read is re-sent through the buffer
        // before the commit, so a read after it never sees the stale image. The applier lock
        // (taken first, as restore does) keeps buffer workers out from the re-send to the
        // commit: one applying a re-sent change against the manifest without these segments
        // would find no row to change, mark it applied, and leave the stale image archived.
        let applier = self.lock_applier(tenant).await?;
        let mut lock = self.lock_tenant(tenant, true).await?;
        let now = self
            .hot
            .versions_in(&mut lock, tenant, from, cutoff)
            .await?;
        // Buffered by the manifest commit itself: a crash before it must not leave changes
        // for keys it never archived, which a later archive of newer images would get
        // overwritten by (found by the crash at `manifest_swap`).
        let requeue = self
            .changed_since_read(tenant, archived, versions, &now)
            .await?;
        let requeued = requeue.len() as u64;
        ferry_crash::crash_point!("manifest_swap");
        self.commit(
            tenant,
            &SegmentCommit {
                add,
                archived_through: Some(cutoff.to_owned()),
                requeue,
                ..SegmentCommit::default()
            },
        )
        .await?;
        lock.commit()
            .await
            .map_err(|e| TierError::db("release the tenant lock", e))?;
        applier
            .commit()
            .await
            .map_err(|e| TierError::db("release the applier lock", e))?;
        Ok(requeued)
    }

    /// `a <= b` for two timestamps as PostgreSQL reads them (compared by the database, so
    /// any format it accepts works).
    fn not_after(&self, a: &str, b: &str) -> bool {
        chrono::DateTime::parse_from_rfc3339(a)
            .ok()
            .zip(chrono::DateTime::parse_from_rfc3339(b).ok())
            .is_some_and(|(a, b)| a <= b)
    }

    /// The difference between the rows as archived and as the hot table holds them now (by
    /// `xmin`), as changes for the buffer: changed rows as upserts of their current image,
    /// vanished ones as deletes. Runs under the tenant's exclusive lock, so the images read
    /// are final.
    async fn changed_since_read(
        &self,
        tenant: &TenantId,
        archived: &RecordBatch,
        versions: &[String],
        now: &HashMap<RowKey, String>,
    ) -> Result<Vec<Requeue>, TierError> {
        let decl = self.decl();
        let columns = key_columns(decl);
        let mut requeue = Vec::new();
        for row in 0..archived.num_rows() {
            let Some(key) = key_at(decl, archived, &columns, row) else {
                continue;
            };
            let (operation, payload) = match now.get(&key) {
                Some(xmin) if Some(xmin) == versions.get(row) => continue,
                Some(_) => match self.hot.get(tenant, &key).await? {
                    Some(image) => ("upsert", serde_json::Value::Object(image)),
                    None => ("delete", serde_json::Value::Null),
                },
                None => ("delete", serde_json::Value::Null),
            };
            requeue.push(Requeue {
                key: key_text(&key),
                operation: operation.to_owned(),
                payload,
            });
        }
        Ok(requeue)
    }

    async fn record_progress(
        &self,
        tenant: &TenantId,
        rows: u64,
        epoch: i64,
    ) -> Result<(), TierError> {
        let phase = self
            .store
            .tenant(&self.migration, tenant)
            .await
            .map_err(err_store)?
            .state
            .phase;
        // The archive is the forward backfill while the hot table is authoritative; later it
        // simply keeps going as rows age.
        if matches!(phase, Phase::DualWrite | Phase::Shadow) {
            self.record_complete(tenant, CopyDirection::Forward, rows, epoch)
                .await?;
        }
        Ok(())
    }
}
