//! The cold tier: a hot table's old rows as Parquet segments on object storage.
//!
//! - [`columns`]: the table's declaration, read from the catalogue, each column mapped to a
//!   lossless Arrow type (or refused);
//! - [`codec`]: rows from PostgreSQL into Arrow, and back as JSON PostgreSQL reads exactly;
//! - [`segment`]: one tenant's rows, sorted by key, as one zstd Parquet object;
//! - [`cold`]: the object store, object names built from validated ids, point lookups.

pub mod codec;
pub mod cold;
pub mod columns;
pub mod error;
pub mod hot;
pub mod key;
pub mod segment;
pub mod table;
pub mod tiering;

pub use cold::{ColdStore, SegmentId};
pub use columns::{Column, ColumnKind, Declaration, TableDecl};
pub use error::TierError;
pub use hot::{HotTable, Row};
pub use key::{KeyValue, RowKey};
pub use segment::{SegmentFile, write_segment};
pub use table::{TableError, TierPath, TierReason, TierRoute, TierStats, TieredTable};
pub use tiering::{ArchiveReport, ColdAnswer, Recheck, Tiering, TieringConfig};
