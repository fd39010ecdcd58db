//! The cold tier's object store: where segments live, named by Ferry from validated ids.
//!
//! `file:///path` or a plain path is a local directory (the default). `s3://bucket/prefix`,
//! `gs://bucket/prefix` and `az://container/prefix` are cloud object stores when Ferry is built
//! with the `cloud` feature (credentials and endpoints from the environment, as each cloud's
//! own tools read them); a build without it refuses them with a message saying so, rather
//! than silently writing somewhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::{BooleanArray, RecordBatch};
use bytes::Bytes;
use ferry_domain::{MigrationId, TenantId};
use futures_util::TryStreamExt as _;
use object_store::local::LocalFileSystem;
use object_store::path::{Path, PathPart};
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, RowFilter,
};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use crate::columns::TableDecl;
use crate::error::TierError;
use crate::key::{KeyValue, RowKey, key_at};
use crate::segment::key_columns;

/// A segment's id: chosen by Ferry (a sequence number), never taken from input.
pub type SegmentId = i64;

pub struct ColdStore {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// Footers (with page indexes) by object path: immutable objects, so never stale.
    footers: Mutex<HashMap<String, ArrowReaderMetadata>>,
}

fn local(dir: &str) -> Result<Arc<dyn ObjectStore>, String> {
    if dir.is_empty() {
        return Err("no directory given".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("create the directory: {e}"))?;
    let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| e.to_string())?;
    Ok(Arc::new(store))
}

/// Cloud object stores, compiled in with the `cloud` feature.
#[cfg(feature = "cloud")]
mod cloud {
    use std::sync::Arc;

    use object_store::ObjectStore;
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    use object_store::path::Path;
    use object_store::prefix::PrefixStore;

    /// `rest` is `bucket[/prefix]`; the prefix becomes the store's root, so segment keys are
    /// `prefix/<migration>/<tenant>/<segment>.parquet`.
    pub(super) fn open(
        scheme: &str,
        rest: &str,
        options: &[(&str, &str)],
    ) -> Result<Arc<dyn ObjectStore>, String> {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("no bucket given: {scheme}://<bucket>[/<prefix>]"));
        }
        let prefix = Path::parse(prefix.trim_matches('/'))
            .map_err(|e| format!("the prefix {prefix:?} is not a valid object path: {e}"))?;
        let base = format!("{scheme}://{bucket}");
        let key_error = |key: &str, e: object_store::Error| format!("option {key:?}: {e}");
        let build_error = |e: object_store::Error| e.to_string();
        Ok(match scheme {
            "s3" => {
                let mut builder = AmazonS3Builder::from_env().with_url(&base);
                for (key, value) in options {
                    let parsed: AmazonS3ConfigKey = key.parse().map_err(|e| key_error(key, e))?;
                    builder = builder.with_config(parsed, *value);
                }
                rooted(builder.build().map_err(build_error)?, &prefix)
            }
            "gs" => {
                let mut builder = GoogleCloudStorageBuilder::from_env().with_url(&base);
                for (key, value) in options {
                    let parsed: GoogleConfigKey = key.parse().map_err(|e| key_error(key, e))?;
                    builder = builder.with_config(parsed, *value);
                }
                rooted(builder.build().map_err(build_error)?, &prefix)
            }
            _ => {
                let mut builder = MicrosoftAzureBuilder::from_env().with_url(&base);
                for (key, value) in options {
                    let parsed: AzureConfigKey = key.parse().map_err(|e| key_error(key, e))?;
                    builder = builder.with_config(parsed, *value);
                }
                rooted(builder.build().map_err(build_error)?, &prefix)
            }
        })
    }

    /// `store` with `prefix` (if any) as its root.
    fn rooted<S: ObjectStore>(store: S, prefix: &Path) -> Arc<dyn ObjectStore> {
        if prefix.as_ref().is_empty() {
            Arc::new(store)
        } else {
            Arc::new(PrefixStore::new(store, prefix.clone()))
        }
    }
}

/// Without the `cloud` feature: a clear refusal, never a silent write elsewhere.
#[cfg(not(feature = "cloud"))]
mod cloud {
    use std::sync::Arc;

    use object_store::ObjectStore;

    pub(super) fn open(
        scheme: &str,
        _rest: &str,
        _options: &[(&str, &str)],
    ) -> Result<Arc<dyn ObjectStore>, String> {
        Err(format!(
            "{scheme} object storage is not compiled into this build of Ferry: build it with \
             `cargo build --release --features cloud` (docs/tiering.md), or use a file:// \
             directory"
        ))
    }
}

impl std::fmt::Debug for ColdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdStore").field("url", &self.url).finish()
    }
}

impl ColdStore {
    /// Opens the store at `url`, creating a local directory if needed.
    pub fn open(url: &str) -> Result<ColdStore, TierError> {
        ColdStore::open_with(url, &[])
    }

    /// Checks a cold-tier URL's form without opening anything: a local directory, or a cloud
    /// store this build supports, with something after the scheme.
    pub fn check_url(url: &str) -> Result<(), TierError> {
        let bad = |detail: String| TierError::Url {
            url: url.to_owned(),
            detail,
        };
        let (scheme, rest) = url.split_once("://").unwrap_or(("file", url));
        if rest.trim_matches('/').is_empty() {
            return Err(bad("no directory, bucket or container given".into()));
        }
        match scheme {
            "file" => Ok(()),
            "s3" | "gs" | "az" if cfg!(feature = "cloud") => Ok(()),
            "s3" | "gs" | "az" => Err(bad(
                "this ferry was built without the `cloud` feature; rebuild with --features cloud"
                    .into(),
            )),
            other => Err(bad(format!(
                "unknown scheme {other:?}: use a directory (file:///path), \
                 s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            ))),
        }
    }

    /// [`ColdStore::open`], with `object_store` configuration keys (`aws_endpoint`,
    /// `aws_region`, `google_service_account`, …) over what the environment says. Only cloud
    /// URLs take options.
    pub fn open_with(url: &str, options: &[(&str, &str)]) -> Result<ColdStore, TierError> {
        let bad = |detail: String| TierError::Url {
            url: url.to_owned(),
            detail,
        };
        // A plain path is a local directory.
        let (scheme, rest) = url.split_once("://").unwrap_or(("file", url));
        let is_cloud = matches!(scheme, "s3" | "gs" | "az");
        if !options.is_empty() && !is_cloud {
            return Err(bad("only cloud object stores take options".into()));
        }
        let store: Arc<dyn ObjectStore> = if is_cloud {
            cloud::open(scheme, rest, options).map_err(bad)?
        } else if scheme == "file" {
            local(rest).map_err(bad)?
        } else {
            return Err(bad(format!(
                "unknown scheme {scheme:?}: use a directory (file:///path), \
                 s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"
            )));
        };
        Ok(ColdStore {
            store,
            url: url.to_owned(),
            footers: Mutex::new(HashMap::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// `<migration>/<tenant>/<segment>.parquet`, each part escaped by `object_store`.
    pub fn segment_path(migration: &MigrationId, tenant: &TenantId, segment: SegmentId) -> Path {
        Path::from_iter([
            PathPart::from(migration.as_str()),
            PathPart::from(tenant.as_str()),
            PathPart::from(format!("{segment:012}.parquet")),
        ])
    }

    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), TierError> {
        self.store
            .put(path, PutPayload::from_bytes(bytes))
            .await
            .map_err(|cause| TierError::ObjectStore {
                what: "write",
                path: path.to_string(),
                cause,
            })?;
        Ok(())
    }

    /// A segment's bytes, whole.
    pub async fn read_bytes(&self, path: &Path) -> Result<Bytes, TierError> {
        let fail = |cause| TierError::ObjectStore {
            what: "read",
            path: path.to_string(),
            cause,
        };
        self.store
            .get(path)
            .await
            .map_err(fail)?
            .bytes()
            .await
            .map_err(fail)
    }

    /// Deletes a segment; one already gone is not an error (deletion is retried after
    /// crashes).
    pub async fn delete(&self, path: &Path) -> Result<(), TierError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(cause) => {
                return Err(TierError::ObjectStore {
                    what: "delete",
                    path: path.to_string(),
                    cause,
                });
            }
        }
        if let Ok(mut footers) = self.footers.lock() {
            footers.remove(path.as_ref());
        }
        Ok(())
    }

    /// Every object under `migration/tenant/`, for garbage collection.
    pub async fn list(
        &self,
        migration: &MigrationId,
        tenant: &TenantId,
    ) -> Result<Vec<Path>, TierError> {
        let prefix = Path::from_iter([
            PathPart::from(migration.as_str()),
            PathPart::from(tenant.as_str()),
        ]);
        self.store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(|cause| TierError::ObjectStore {
                what: "list",
                path: prefix.to_string(),
                cause,
            })
    }

    async fn footer(&self, path: &Path) -> Result<ArrowReaderMetadata, TierError> {
        if let Some(m) = self
            .footers
            .lock()
            .ok()
            .and_then(|f| f.get(path.as_ref()).cloned())
        {
            return Ok(m);
        }
        let mut reader = SegmentReader::new(self.store.clone(), path.clone());
        let meta = ArrowReaderMetadata::load_async(
            &mut reader,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )
        .await
        .map_err(|e| TierError::segment(path, e))?;
        if let Ok(mut footers) = self.footers.lock() {
            footers.insert(path.to_string(), meta.clone());
        }
        Ok(meta)
    }

    /// A segment written for another shape of the table (a column added, dropped or retyped
    /// since) is refused, not decoded by position into the wrong columns.
    fn check_shape(
        decl: &TableDecl,
        path: &Path,
        meta: &ArrowReaderMetadata,
    ) -> Result<(), TierError> {
        let expected = decl.arrow_schema();
        let found = meta.schema();
        let same = expected.fields().len() == found.fields().len()
            && expected
                .fields()
                .iter()
                .zip(found.fields().iter())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if same {
            Ok(())
        } else {
            Err(TierError::segment(
                path,
                format!(
                    "written for columns ({}), the table now has ({}); restore the tenant to \
                     the hot table (roll it back) before changing the table's shape",
                    found
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    expected
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    }

    /// Every row of a segment, in key order, checked against the table's declaration.
    pub async fn read_checked(
        &self,
        decl: &TableDecl,
        path: &Path,
    ) -> Result<Vec<RecordBatch>, TierError> {
        Self::check_shape(decl, path, &self.footer(path).await?)?;
        self.read(path).await
    }

    /// Every row of a segment, in key order.
    pub async fn read(&self, path: &Path) -> Result<Vec<RecordBatch>, TierError> {
        let meta = self.footer(path).await?;
        let reader = SegmentReader::new(self.store.clone(), path.clone());
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
            .with_batch_size(8192)
            .build()
            .map_err(|e| TierError::segment(path, e))?
            .try_collect()
            .await
            .map_err(|e| TierError::segment(path, e))
    }

    /// The row with `key` in a segment, as a one-row batch, or `None`: row groups the first
    /// key column's bloom filter rules out are not read at all.
    pub async fn lookup(
        &self,
        decl: &TableDecl,
        path: &Path,
        key: &RowKey,
    ) -> Result<Option<RecordBatch>, TierError> {
        let meta = self.footer(path).await?;
        Self::check_shape(decl, path, &meta)?;
        let columns = key_columns(decl);
        let reader = SegmentReader::new(self.store.clone(), path.clone());
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta.clone());
        let groups = meta.metadata().num_row_groups();
        let mut candidates = Vec::with_capacity(groups);
        for rg in 0..groups {
            let maybe = match (columns.first(), key.first()) {
                (Some(&col), Some(first)) => {
                    match builder
                        .get_row_group_column_bloom_filter(rg, col)
                        .await
                        .map_err(|e| TierError::segment(path, e))?
                    {
                        Some(bloom) => match first {
                            KeyValue::Int(v) => match decl.columns[col].kind {
                                crate::columns::ColumnKind::Int64 => bloom.check(v),
                                _ => i32::try_from(*v).is_ok_and(|v| bloom.check(&v)),
                            },
                            KeyValue::Text(s) => bloom.check(&s.as_str()),
                            KeyValue::Uuid(b) => bloom.check(&b[..]),
                        },
                        None => true,
                    }
                }
                _ => true,
            };
            if maybe {
                candidates.push(rg);
            }
        }
        if candidates.is_empty() {
            return Ok(None);
        }
        let mask = ProjectionMask::roots(
            meta.metadata().file_metadata().schema_descr(),
            columns.iter().copied(),
        );
        let wanted = key.clone();
        // The projected batch holds the key columns in table order; the key is in key order.
        let keyed = key_only(decl);
        let mut in_table_order = columns.clone();
        in_table_order.sort_unstable();
        let positions: Vec<usize> = columns
            .iter()
            .filter_map(|c| in_table_order.iter().position(|t| t == c))
            .collect();
        let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
            Ok(BooleanArray::from_iter((0..batch.num_rows()).map(|row| {
                Some(key_at(&keyed, &batch, &positions, row).as_ref() == Some(&wanted))
            })))
        });
        let mut stream = builder
            .with_row_groups(candidates)
            .with_row_filter(RowFilter::new(vec![Box::new(predicate)]))
            .build()
            .map_err(|e| TierError::segment(path, e))?;
        while let Some(batch) = stream
            .try_next()
            .await
            .map_err(|e| TierError::segment(path, e))?
        {
            if batch.num_rows() > 0 {
                return Ok(Some(batch.slice(0, 1)));
            }
        }
        Ok(None)
    }
}

/// A declaration narrowed to its key columns in table order, as a projection returns them.
fn key_only(decl: &TableDecl) -> TableDecl {
    let mut positions = key_columns(decl);
    positions.sort_unstable();
    let mut keyed = decl.clone();
    keyed.columns = positions
        .into_iter()
        .map(|i| decl.columns[i].clone())
        .collect();
    keyed
}

/// Reads byte ranges of one segment for the Parquet decoder: footer, bloom filters, pages.
struct SegmentReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
}

impl SegmentReader {
    fn new(store: Arc<dyn ObjectStore>, path: Path) -> SegmentReader {
        SegmentReader { store, path }
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for SegmentReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures_util::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(external)
        })
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> futures_util::future::BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        Box::pin(async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        })
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> futures_util::future::BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        Box::pin(async move {
            let size = self.store.head(&self.path).await.map_err(external)?.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        })
    }
}
