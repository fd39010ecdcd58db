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
pub mod key;
pub mod segment;

pub use cold::{ColdStore, SegmentId};
pub use columns::{Column, ColumnKind, Declaration, TableDecl};
pub use error::TierError;
pub use key::{KeyValue, RowKey};
pub use segment::{SegmentFile, write_segment};
