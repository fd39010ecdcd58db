//! Parquet segments: one tenant's rows, sorted by key, in one immutable object.
//!
//! Layout, chosen for both size and point lookups: zstd; dictionary encoding where values
//! repeat (text), delta encoding for the sorted key and for timestamps; row groups of
//! [`ROW_GROUP_ROWS`] rows with page statistics and a page index, and a bloom filter on the
//! first key column, so a lookup reads the footer (cached), one bloom filter per row group it
//! cannot rule out by the manifest's key range, and then only the pages holding the row.

use std::sync::Arc;

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::columns::{ColumnKind, TableDecl};
use crate::error::TierError;
use crate::key::{RowKey, key_at};

/// Rows per row group: small enough that a point lookup decodes little, large enough that
/// per-group metadata stays a small fraction of the file.
pub const ROW_GROUP_ROWS: usize = 8 * 1024;
/// Rows per data page: a point lookup reads one page of each column.
pub const PAGE_ROWS: usize = 1024;

/// A segment ready to upload, with what the manifest records about it.
#[derive(Debug, Clone)]
pub struct SegmentFile {
    pub bytes: Bytes,
    pub rows: u64,
    pub min_key: RowKey,
    pub max_key: RowKey,
    /// Hex sha-256 of the bytes: the manifest's record of what was written.
    pub checksum: String,
}

pub(crate) fn key_columns(decl: &TableDecl) -> Vec<usize> {
    decl.key.iter().filter_map(|k| decl.position(k)).collect()
}

fn properties(decl: &TableDecl) -> Result<WriterProperties, TierError> {
    let level = ZstdLevel::try_new(3).map_err(|e| TierError::Segment {
        path: String::new(),
        detail: e.to_string(),
    })?;
    let key = key_columns(decl);
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(
            key.iter()
                .map(|&i| SortingColumn {
                    column_idx: i32::try_from(i).unwrap_or(i32::MAX),
                    descending: false,
                    nulls_first: false,
                })
                .collect(),
        ));
    for (i, c) in decl.columns.iter().enumerate() {
        let path = ColumnPath::from(c.name.as_str());
        let integer_like = matches!(
            c.kind,
            ColumnKind::Int32
                | ColumnKind::Int64
                | ColumnKind::Date
                | ColumnKind::Timestamp
                | ColumnKind::TimestampTz
        );
        // Sorted keys and mostly increasing times: deltas are tiny.
        if integer_like && (key.first() == Some(&i) || c.kind != ColumnKind::Int32) {
            b = b
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path.clone(), Encoding::DELTA_BINARY_PACKED);
        }
        if key.first() == Some(&i) {
            b = b
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path, 0.01);
        }
    }
    Ok(b.build())
}

/// Writes `batches` (one tenant's rows, in key order) as one segment.
pub fn write_segment(decl: &TableDecl, batches: &[RecordBatch]) -> Result<SegmentFile, TierError> {
    let fail = |detail: String| TierError::Segment {
        path: "(new segment)".into(),
        detail,
    };
    let key = key_columns(decl);
    let mut rows = 0u64;
    // The range as Ferry compares keys (bytes for text), over every row: rows come in the
    // database's collation order, where first and last need not be the byte-order extremes.
    let (mut min_key, mut max_key): (Option<RowKey>, Option<RowKey>) = (None, None);
    for batch in batches {
        for row in 0..batch.num_rows() {
            if let Some(k) = key_at(decl, batch, &key, row) {
                if min_key.as_ref().is_none_or(|m| k < *m) {
                    min_key = Some(k.clone());
                }
                if max_key.as_ref().is_none_or(|m| k > *m) {
                    max_key = Some(k);
                }
            }
        }
        rows += batch.num_rows() as u64;
    }
    let (Some(min_key), Some(max_key)) = (min_key, max_key) else {
        return Err(fail("a segment needs at least one row".into()));
    };
    let schema = Arc::new(decl.arrow_schema());
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties(decl)?))
        .map_err(|e| fail(e.to_string()))?;
    for batch in batches {
        writer.write(batch).map_err(|e| fail(e.to_string()))?;
    }
    let bytes = writer.into_inner().map_err(|e| fail(e.to_string()))?;
    let checksum = sha256_hex(&bytes);
    Ok(SegmentFile {
        bytes: Bytes::from(bytes),
        rows,
        min_key,
        max_key,
        checksum,
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
    }
    out
}
