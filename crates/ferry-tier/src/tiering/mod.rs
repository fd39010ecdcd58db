//! One tiering migration's work on its tenants: archive, apply the update buffer, read the
//! cold tier (merged with pending changes), delete hot copies, restore, collect garbage.
//!
//! Every manifest change is one [`SegmentCommit`](ferry_store::SegmentCommit): new segments
//! are uploaded and read back before they are committed, and a crash anywhere before the
//! commit leaves only a pending reservation and an orphan object, which garbage collection
//! removes. Re-running any step after a crash therefore changes nothing that was already
//! committed.
//!
//! This module holds what the steps share: opening a migration, keys as the manifest stores
//! them, the control-store calls every step makes, the one segment upload, and the tenant's
//! lock. Each step is a module of its own.

use std::sync::Arc;

use arrow_array::RecordBatch;
use ferry_domain::{MigrationId, TenantId};
use ferry_store::{
    BackfillProgress, BufferedUpdate, ControlStore, CopyDirection, MigrationKind, NewSegment,
    SegmentCommit, SegmentRecord, StoreError,
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
mod archive;
mod deletion;
mod gc;
mod read;
mod restore;
mod verify;

pub use archive::{ArchiveReport, SEGMENT_ROWS};
pub use read::ColdAnswer;
pub use verify::Recheck;

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
    /// Where segments go: `file:///dir` (or a plain path); with the `cloud` feature also
    /// `s3://bucket/prefix`, `gs://…` and `az://…` (credentials from the environment).
    pub cold_url: String,
    #[serde(default)]
    pub buffer: BufferSettings,
}

fn public() -> String {
    "public".into()
}

impl TieringConfig {
    /// Parses and checks a tiering config without touching a database or the object store:
    /// known fields only, every name a valid SQL identifier, a cold-tier URL of a known
    /// scheme. `ferry migration create` runs it, so a bad config is refused naming the field
    /// before any worker opens the migration.
    pub fn from_json(value: &serde_json::Value) -> Result<TieringConfig, TierError> {
        let config: TieringConfig = serde_json::from_value(value.clone())
            .map_err(|e| TierError::Declaration(format!("tiering config: {e}")))?;
        let ident = |field: &'static str, value: &str| {
            ferry_domain::SqlIdent::new(value)
                .map(|_| ())
                .map_err(|source| TierError::Ident { field, source })
        };
        ident("schema", &config.schema)?;
        ident("table", &config.table)?;
        ident("tenant_column", &config.tenant_column)?;
        ident("age_column", &config.age_column)?;
        for column in config.columns.iter().flatten() {
            ident("columns", column)?;
        }
        ColdStore::check_url(&config.cold_url)?;
        if config.buffer.dead_after < 1 {
            return Err(TierError::Declaration(format!(
                "tiering config: buffer.dead_after is {}; it must be at least 1",
                config.buffer.dead_after
            )));
        }
        Ok(config)
    }
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
        let config = TieringConfig::from_json(&record.config).map_err(|e| match e {
            TierError::Declaration(why) => TierError::Declaration(format!("{migration}: {why}")),
            other => other,
        })?;
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

    /// Records a copy in `direction` complete: the fact a phase guard waits for. `epoch` is
    /// the tenant's copy epoch when the work began; the store refuses the record if it has
    /// changed since (the work may have missed writes of the new epoch).
    async fn record_complete(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        rows: u64,
        epoch: i64,
    ) -> Result<(), TierError> {
        let mut p = BackfillProgress::new(self.migration.clone(), tenant.clone(), direction);
        p.epoch = epoch;
        p.rows_done = rows;
        p.rows_total = rows;
        p.complete = true;
        self.store.record_backfill(&p).await.map_err(err_store)
    }

    /// The tenant's live segments: the manifest.
    async fn segments(&self, tenant: &TenantId) -> Result<Vec<SegmentRecord>, TierError> {
        self.store
            .segments(&self.migration, tenant)
            .await
            .map_err(err_store)
    }

    /// The tenant's pending and dead buffered changes, in sequence order.
    async fn pending(&self, tenant: &TenantId) -> Result<Vec<BufferedUpdate>, TierError> {
        self.store
            .pending_updates(&self.migration, tenant)
            .await
            .map_err(err_store)
    }

    /// Commits one change of the tenant's manifest, atomically.
    async fn commit(&self, tenant: &TenantId, commit: &SegmentCommit) -> Result<(), TierError> {
        self.store
            .commit_segments(&self.migration, tenant, commit)
            .await
            .map_err(err_store)
    }

    /// The advisory lock that orders a tenant's writes (shared) against the moments a key
    /// changes tier: an archive's commit and a restore (exclusive).
    pub fn lock_name(&self, tenant: &TenantId) -> String {
        format!("ferry:{}:{}", self.migration, tenant)
    }

    /// Takes the key's write lock in `lock`'s transaction (held until it ends): every write of
    /// one key, from reading its current image to enqueueing its change and writing its hot
    /// copy, runs alone, so two writers cannot build their images from the same stale one
    /// (item 1 of the review: the later image wiped the earlier change, or an update's image
    /// brought back a row a delete had just removed).
    pub async fn lock_key(
        &self,
        lock: &mut sqlx::PgConnection,
        tenant: &TenantId,
        key: &RowKey,
    ) -> Result<(), TierError> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{}:key:{}", self.lock_name(tenant), key_text(key)))
            .execute(lock)
            .await
            .map_err(|e| TierError::db("lock the key", e))?;
        Ok(())
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
