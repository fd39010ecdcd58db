//! Row keys: the primary key without the tenant column, typed so that lookups compare values
//! the way the database does for integers and uuids (text keys compare by bytes).

use arrow_array::cast::AsArray;
use arrow_array::types::{Int16Type, Int32Type, Int64Type};
use arrow_array::{Array, RecordBatch};

use crate::columns::{ColumnKind, TableDecl};
use crate::error::TierError;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyValue {
    Int(i64),
    Text(String),
    Uuid([u8; 16]),
}

pub type RowKey = Vec<KeyValue>;

impl KeyValue {
    /// The value as PostgreSQL's text input reads it (for binding as a parameter).
    pub fn to_text(&self) -> String {
        match self {
            KeyValue::Int(v) => v.to_string(),
            KeyValue::Text(s) => s.clone(),
            KeyValue::Uuid(b) => crate::codec::format_uuid(b),
        }
    }

    /// Parses a key column's text as its kind (for keys given on the command line).
    pub fn parse(kind: ColumnKind, text: &str, column: &str) -> Result<KeyValue, TierError> {
        let bad = |detail: String| TierError::Value {
            column: column.to_owned(),
            detail,
        };
        match kind {
            ColumnKind::Int16 | ColumnKind::Int32 | ColumnKind::Int64 => text
                .parse()
                .map(KeyValue::Int)
                .map_err(|e| bad(format!("{text:?} is not an integer: {e}"))),
            ColumnKind::Text => Ok(KeyValue::Text(text.to_owned())),
            ColumnKind::Uuid => crate::codec::parse_uuid(text, column).map(KeyValue::Uuid),
            other => Err(bad(format!("{other:?} cannot be a key column"))),
        }
    }
}

/// The kinds a key column may have: integers, text and uuid compare the same in Rust and in
/// PostgreSQL (up to text collation), so segments can be searched by them.
pub fn is_key_kind(kind: ColumnKind) -> bool {
    matches!(
        kind,
        ColumnKind::Int16
            | ColumnKind::Int32
            | ColumnKind::Int64
            | ColumnKind::Text
            | ColumnKind::Uuid
    )
}

/// The key of row `row` of a batch of the table's schema (`columns` are the key columns'
/// positions in the batch).
pub fn key_at(
    decl: &TableDecl,
    batch: &RecordBatch,
    columns: &[usize],
    row: usize,
) -> Option<RowKey> {
    columns
        .iter()
        .map(|&i| {
            let a = batch.column(i);
            if a.is_null(row) {
                return None;
            }
            Some(match decl.columns[i].kind {
                ColumnKind::Int16 => {
                    KeyValue::Int(i64::from(a.as_primitive::<Int16Type>().value(row)))
                }
                ColumnKind::Int32 => {
                    KeyValue::Int(i64::from(a.as_primitive::<Int32Type>().value(row)))
                }
                ColumnKind::Int64 => KeyValue::Int(a.as_primitive::<Int64Type>().value(row)),
                ColumnKind::Text => KeyValue::Text(a.as_string::<i32>().value(row).to_owned()),
                ColumnKind::Uuid => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(a.as_fixed_size_binary().value(row));
                    KeyValue::Uuid(b)
                }
                _ => return None,
            })
        })
        .collect()
}

/// The key columns at the start of a row selected as `key columns…` (uuids as text).
pub fn key_from_row(decl: &TableDecl, row: &sqlx::postgres::PgRow) -> Result<RowKey, TierError> {
    use sqlx::Row as _;
    decl.key
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let kind = decl.key_kind(k)?;
            let bad = |e: sqlx::Error| TierError::Value {
                column: k.to_string(),
                detail: e.to_string(),
            };
            Ok(match kind {
                ColumnKind::Int16 => {
                    KeyValue::Int(i64::from(row.try_get::<i16, _>(i).map_err(bad)?))
                }
                ColumnKind::Int32 => {
                    KeyValue::Int(i64::from(row.try_get::<i32, _>(i).map_err(bad)?))
                }
                ColumnKind::Int64 => KeyValue::Int(row.try_get::<i64, _>(i).map_err(bad)?),
                ColumnKind::Uuid => {
                    let text: String = row.try_get(i).map_err(bad)?;
                    KeyValue::Uuid(crate::codec::parse_uuid(&text, k.as_str())?)
                }
                _ => KeyValue::Text(row.try_get::<String, _>(i).map_err(bad)?),
            })
        })
        .collect()
}
