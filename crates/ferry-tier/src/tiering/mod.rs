//! One tiering migration's work on its tenants: archive, apply the update buffer, read the
//! cold tier (merged with pending changes), delete hot copies, restore, collect garbage.
//!
//! Every manifest change is one [`SegmentCommit`]: new segments are uploaded and read back
//! before they are committed, and a crash anywhere before the commit leaves only a pending
//! reservation and an orphan object, which garbage collection removes. Re-running any step
//! after a crash therefore changes nothing that was already committed.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use ferry_domain::{MigrationId, Phase, TenantId};
use ferry_store::{
    BackfillProgress, ControlStore, CopyDirection, MigrationKind, NewSegment, SegmentCommit,
    SegmentRecord, StoreError,
};
use serde::Deserialize;
use sqlx::PgPool;

use crate::cold::ColdStore;
use crate::columns::{Declaration, TableDecl};
use crate::error::TierError;
use crate::hot::HotTable;
use crate::key::{KeyValue, RowKey, key_at};
use crate::segment::{key_columns, write_segment};

mod apply;
mod deletion;
mod gc;
mod read;
mod restore;

pub use read::ColdAnswer;

/// Rows per segment an archive run writes at most.
pub const SEGMENT_ROWS: usize = 256 * 1024;

/// A tiering migration's config (JSON in the migration).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TieringConfig {
    #[serde(default = "public")]
    pub schema: String,
    pub table: String,
    pub tenant_column: String,
    pub age_column: String,
    /// Archive only these columns (plus tenant, key and age); all by default.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Where segments go: `file:///dir` (or a plain path).
    pub cold_url: String,
    #[serde(default)]
    pub buffer: BufferSettings,
}

fn public() -> String {
    "public".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferSettings {
    /// Attempts before a buffered change is parked as dead.
    pub dead_after: i32,
    /// Archiving pauses for a tenant whose pending changes exceed this many…
    pub max_depth: u64,
    /// …or whose oldest pending change is older than this.
    pub max_age_s: u64,
}

impl Default for BufferSettings {
    fn default() -> Self {
        BufferSettings {
            dead_after: 5,
            max_depth: 10_000,
            max_age_s: 3_600,
        }
    }
}

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

pub struct Tiering {
    pub store: Arc<dyn ControlStore>,
    pub migration: MigrationId,
    pub hot: HotTable,
    pub cold: ColdStore,
    pub config: TieringConfig,
}

/// A key as the manifest and the buffer store it: a JSON array of the values' text.
pub fn key_text(key: &RowKey) -> String {
    serde_json::Value::from(key.iter().map(KeyValue::to_text).collect::<Vec<_>>()).to_string()
}

fn err_store(e: StoreError) -> TierError {
    TierError::Store(e)
}

impl Tiering {
    /// Opens a tiering migration over the hot table's database.
    pub async fn open(
        store: Arc<dyn ControlStore>,
        migration: &MigrationId,
        pool: PgPool,
    ) -> Result<Tiering, TierError> {
        let record = store.migration(migration).await.map_err(err_store)?;
        if record.kind != MigrationKind::Tiering {
            return Err(TierError::Declaration(format!(
                "migration {migration} is a {} migration, not tiering",
                record.kind.as_str()
            )));
        }
        let config: TieringConfig = serde_json::from_value(record.config.clone())
            .map_err(|e| TierError::Declaration(format!("tiering config of {migration}: {e}")))?;
        let decl = TableDecl::declare(
            &pool,
            &Declaration {
                schema: config.schema.clone(),
                table: config.table.clone(),
                tenant_column: config.tenant_column.clone(),
                age_column: config.age_column.clone(),
                columns: config.columns.clone(),
            },
        )
        .await?;
        Ok(Tiering {
            cold: ColdStore::open(&config.cold_url)?,
            hot: HotTable::new(decl, pool),
            store,
            migration: migration.clone(),
            config,
        })
    }

    pub fn decl(&self) -> &TableDecl {
        &self.hot.decl
    }

    /// Parses a key given as text values, one per key column.
    pub fn parse_key(&self, values: &[&str]) -> Result<RowKey, TierError> {
        let decl = self.decl();
        if values.len() != decl.key.len() {
            return Err(TierError::Value {
                column: decl.key_list("").replace('.', ""),
                detail: format!("a key has {} value(s)", decl.key.len()),
            });
        }
        decl.key
            .iter()
            .zip(values)
            .map(|(k, v)| KeyValue::parse(decl.key_kind(k)?, v, k.as_str()))
            .collect()
    }

    fn parse_stored_key(&self, text: &str) -> Result<RowKey, TierError> {
        let values: Vec<String> = serde_json::from_str(text).map_err(|e| TierError::Value {
            column: "key".into(),
            detail: format!("stored key {text}: {e}"),
        })?;
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        self.parse_key(&refs)
    }

    fn covers(&self, segment: &SegmentRecord, key: &RowKey) -> Result<bool, TierError> {
        Ok(self.parse_stored_key(&segment.min_key)? <= *key
            && *key <= self.parse_stored_key(&segment.max_key)?)
    }

    /// Every row of a segment batch as `(key, the codec's JSON image)`.
    fn batch_images(&self, batch: &RecordBatch) -> Vec<(RowKey, String)> {
        let columns = key_columns(self.decl());
        (0..batch.num_rows())
            .filter_map(|row| {
                let key = key_at(self.decl(), batch, &columns, row)?;
                let mut json = String::new();
                crate::codec::row_to_json(self.decl(), batch, row, &mut json);
                Some((key, json))
            })
            .collect()
    }

    fn path(segment: &SegmentRecord) -> object_store::path::Path {
        object_store::path::Path::from(segment.path.as_str())
    }

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
        let pending = self
            .store
            .pending_updates(&self.migration, tenant)
            .await
            .map_err(err_store)?;
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

    /// Uploads one segment of `batch` and reads it back before anyone may rely on it.
    async fn upload(
        &self,
        tenant: &TenantId,
        batch: &RecordBatch,
    ) -> Result<NewSegment, TierError> {
        let id = self
            .store
            .reserve_segment(&self.migration, tenant)
            .await
            .map_err(err_store)?;
        // Encoding is CPU work: off the async workers, so other tenants' I/O goes on.
        let (decl, owned) = (self.decl().clone(), batch.clone());
        let file = tokio::task::spawn_blocking(move || write_segment(&decl, &[owned]))
            .await
            .map_err(|e| TierError::Segment {
                path: "(new segment)".into(),
                detail: format!("the encoder stopped: {e}"),
            })??;
        let path = ColdStore::segment_path(&self.migration, tenant, id);
        self.cold.put(&path, file.bytes.clone()).await?;
        // Read back before anyone may rely on it: the stored bytes are the bytes written.
        let back = self.cold.read_bytes(&path).await?;
        if crate::segment::sha256_hex(&back) != file.checksum {
            return Err(TierError::segment(
                &path,
                "read back differs from what was written",
            ));
        }
        Ok(NewSegment {
            id,
            path: path.to_string(),
            rows: file.rows,
            min_key: key_text(&file.min_key),
            max_key: key_text(&file.max_key),
            checksum: file.checksum,
        })
    }

    /// Archives the tenant's rows with `watermark <= age < cutoff` (RFC 3339), then checks
    /// them against the hot table again: a row a writer changed meanwhile is re-sent through
    /// the update buffer, so the cold tier never keeps a stale image.
    pub async fn archive(
        &self,
        tenant: &TenantId,
        cutoff: &str,
    ) -> Result<ArchiveReport, TierError> {
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
        let started = std::time::Instant::now();
        let (batch, versions) = self.hot.window(tenant, from.as_deref(), cutoff).await?;
        let segments = self
            .store
            .segments(&self.migration, tenant)
            .await
            .map_err(err_store)?;
        let keep = self.not_yet_archived(&segments, &batch).await?;
        let (batch, versions) = if keep.len() == batch.num_rows() {
            (batch, versions)
        } else {
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
            (taken, versions)
        };
        let mut report = ArchiveReport {
            rows: batch.num_rows() as u64,
            read: started.elapsed(),
            ..ArchiveReport::default()
        };
        let started = std::time::Instant::now();
        let mut add = Vec::new();
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = SEGMENT_ROWS.min(batch.num_rows() - offset);
            add.push(self.upload(tenant, &batch.slice(offset, len)).await?);
            offset += len;
        }
        report.segments = add.len() as u64;
        report.write = started.elapsed();
        let started = std::time::Instant::now();
        // The moment these keys change tier: no write of the tenant is between its location
        // lookup and its hot write while the rows are compared again and the manifest is
        // committed. A row a writer changed since the read is re-sent through the buffer
        // before the commit, so a read after it never sees the stale image.
        let mut lock = self.lock_tenant(tenant, true).await?;
        let now = self
            .hot
            .versions_in(&mut lock, tenant, from.as_deref(), cutoff)
            .await?;
        report.requeued = self
            .requeue_changed(tenant, &batch, &versions, &now)
            .await?;
        self.store
            .commit_segments(
                &self.migration,
                tenant,
                &SegmentCommit {
                    add,
                    archived_through: Some(cutoff.to_owned()),
                    ..SegmentCommit::default()
                },
            )
            .await
            .map_err(err_store)?;
        lock.commit()
            .await
            .map_err(|e| TierError::db("release the tenant lock", e))?;
        report.commit = started.elapsed();
        self.record_progress(tenant, report.rows).await?;
        tracing::info!(
            migration = %self.migration, tenant = %tenant, rows = report.rows,
            segments = report.segments, requeued = report.requeued,
            read_s = report.read.as_secs_f64(), write_s = report.write.as_secs_f64(),
            commit_s = report.commit.as_secs_f64(), "archived"
        );
        Ok(report)
    }

    /// `a <= b` for two timestamps as PostgreSQL reads them (compared by the database, so
    /// any format it accepts works).
    fn not_after(&self, a: &str, b: &str) -> bool {
        chrono::DateTime::parse_from_rfc3339(a)
            .ok()
            .zip(chrono::DateTime::parse_from_rfc3339(b).ok())
            .is_some_and(|(a, b)| a <= b)
    }

    /// Buffers the difference between the rows as archived and as the hot table holds them
    /// now (by `xmin`): changed rows as upserts of their current image, vanished ones as
    /// deletes. Runs under the tenant's exclusive lock, so the images read are final.
    async fn requeue_changed(
        &self,
        tenant: &TenantId,
        archived: &RecordBatch,
        versions: &[String],
        now: &std::collections::HashMap<RowKey, String>,
    ) -> Result<u64, TierError> {
        let decl = self.decl();
        let columns = key_columns(decl);
        let mut requeued = 0;
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
            self.store
                .enqueue_update(
                    &self.migration,
                    tenant,
                    &key_text(&key),
                    operation,
                    &payload,
                )
                .await
                .map_err(err_store)?;
            requeued += 1;
        }
        Ok(requeued)
    }

    async fn record_progress(&self, tenant: &TenantId, rows: u64) -> Result<(), TierError> {
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
            self.record_complete(tenant, CopyDirection::Forward, rows)
                .await?;
        }
        Ok(())
    }

    /// Records a copy in `direction` complete: the fact a phase guard waits for.
    async fn record_complete(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        rows: u64,
    ) -> Result<(), TierError> {
        let mut p = BackfillProgress::new(self.migration.clone(), tenant.clone(), direction);
        p.rows_done = rows;
        p.rows_total = rows;
        p.complete = true;
        self.store.record_backfill(&p).await.map_err(err_store)
    }

    /// The advisory lock that orders a tenant's writes (shared) against the moments a key
    /// changes tier: an archive's commit and a restore (exclusive).
    pub fn lock_name(&self, tenant: &TenantId) -> String {
        format!("ferry:{}:{}", self.migration, tenant)
    }

    /// A transaction holding the tenant's lock, shared or exclusive, until it ends.
    pub async fn lock_tenant(
        &self,
        tenant: &TenantId,
        exclusive: bool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, TierError> {
        let mut tx = self
            .hot
            .pool
            .begin()
            .await
            .map_err(|e| TierError::db("begin a tenant lock", e))?;
        let sql = if exclusive {
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
        } else {
            "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))"
        };
        sqlx::query(sql)
            .bind(self.lock_name(tenant))
            .execute(&mut *tx)
            .await
            .map_err(|e| TierError::db("lock the tenant", e))?;
        Ok(tx)
    }
}
