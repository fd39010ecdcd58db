//! Rows between PostgreSQL and Arrow, losslessly, in both directions.
//!
//! Into Arrow: rows are read with [`TableDecl::select_list`] (numerics, uuids and json as
//! PostgreSQL's own text) and appended column by column. Back into PostgreSQL: each row
//! becomes a JSON object whose values PostgreSQL's input functions read back to the same
//! value (`json_populate_recordset`), with `json` columns spliced in as their exact text.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, PrimitiveBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType,
};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, FixedSizeBinaryArray, PrimitiveArray, RecordBatch,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::columns::{Column, ColumnKind, TableDecl};
use crate::error::TierError;

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");

fn decode<'r, T>(row: &'r PgRow, i: usize, column: &str) -> Result<Option<T>, TierError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get::<Option<T>, _>(i)
        .map_err(|e| TierError::Value {
            column: column.to_owned(),
            detail: e.to_string(),
        })
}

/// `-123.45` with scale 2 -> -12345. PostgreSQL prints `numeric(p, s)` with exactly `s`
/// fractional digits; anything else (NaN) cannot be a Decimal128 and is refused.
pub(crate) fn parse_decimal(text: &str, scale: i8, column: &str) -> Result<i128, TierError> {
    let bad = || TierError::Value {
        column: column.to_owned(),
        detail: format!("{text:?} cannot be stored as a decimal of scale {scale}"),
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if frac.len() != usize::try_from(scale).map_err(|_| bad())?
        || int.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let mut value: i128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    Ok(if negative { -value } else { value })
}

pub(crate) fn format_decimal(value: i128, scale: i8) -> String {
    let digits = value.unsigned_abs().to_string();
    let scale = usize::try_from(scale).unwrap_or(0);
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

pub(crate) fn parse_uuid(text: &str, column: &str) -> Result<[u8; 16], TierError> {
    let hex: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    let bad = || TierError::Value {
        column: column.to_owned(),
        detail: format!("{text:?} is not a uuid"),
    };
    if hex.len() != 32 {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

pub(crate) fn format_uuid(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Rows read with [`TableDecl::select_list`] as one Arrow batch of the table's schema.
pub fn rows_to_batch(decl: &TableDecl, rows: &[PgRow]) -> Result<RecordBatch, TierError> {
    let arrays = decl
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| column_array(c, rows, i))
        .collect::<Result<Vec<ArrayRef>, TierError>>()?;
    RecordBatch::try_new(Arc::new(decl.arrow_schema()), arrays).map_err(|e| TierError::Value {
        column: "*".into(),
        detail: e.to_string(),
    })
}

/// Column `c` (the `i`th selected) of `rows` as the Arrow array of its kind.
fn column_array(c: &Column, rows: &[PgRow], i: usize) -> Result<ArrayRef, TierError> {
    let (n, name) = (rows.len(), c.name.as_str());
    let src = Source { rows, i, name };
    let array: ArrayRef = match c.kind {
        ColumnKind::Int16 => Arc::new(src.converted(Int16Builder::with_capacity(n), Ok)?),
        ColumnKind::Int32 => Arc::new(src.converted(Int32Builder::with_capacity(n), Ok)?),
        ColumnKind::Int64 => Arc::new(src.converted(Int64Builder::with_capacity(n), Ok)?),
        ColumnKind::Float32 => Arc::new(src.converted(Float32Builder::with_capacity(n), Ok)?),
        ColumnKind::Float64 => Arc::new(src.converted(Float64Builder::with_capacity(n), Ok)?),
        ColumnKind::Decimal { precision, scale } => {
            let b = Decimal128Builder::with_capacity(n);
            let decimals = src.converted(b, |t: String| parse_decimal(&t, scale, name))?;
            Arc::new(
                decimals
                    .with_precision_and_scale(precision, scale)
                    .map_err(|e| value_error(name, e))?,
            )
        }
        ColumnKind::NumericText
        | ColumnKind::PgText
        | ColumnKind::Text
        | ColumnKind::Json
        | ColumnKind::Jsonb => {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for r in rows {
                b.append_option(decode::<String>(r, i, name)?);
            }
            Arc::new(b.finish())
        }
        ColumnKind::Bool => {
            let mut b = BooleanBuilder::with_capacity(n);
            for r in rows {
                b.append_option(decode::<bool>(r, i, name)?);
            }
            Arc::new(b.finish())
        }
        ColumnKind::Date => Arc::new(
            src.converted(Date32Builder::with_capacity(n), |d: NaiveDate| {
                i32::try_from((d - EPOCH).num_days()).map_err(|e| value_error(name, e))
            })?,
        ),
        ColumnKind::Timestamp => {
            let b = TimestampMicrosecondBuilder::with_capacity(n);
            Arc::new(src.converted(b, |t: NaiveDateTime| Ok(t.and_utc().timestamp_micros()))?)
        }
        ColumnKind::TimestampTz => {
            let b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
            Arc::new(src.converted(b, |t: DateTime<Utc>| Ok(t.timestamp_micros()))?)
        }
        ColumnKind::Uuid => Arc::new(src.uuids()?),
        ColumnKind::Bytes => {
            let mut b = BinaryBuilder::with_capacity(n, n * 16);
            for r in rows {
                b.append_option(decode::<Vec<u8>>(r, i, name)?);
            }
            Arc::new(b.finish())
        }
    };
    Ok(array)
}

/// One column of the rows read: its index in the select list, and its name for errors.
struct Source<'a> {
    rows: &'a [PgRow],
    i: usize,
    name: &'a str,
}

impl Source<'_> {
    /// Every row's value decoded as `T`, converted by `convert`, appended to `b`.
    fn converted<A, T>(
        &self,
        mut b: PrimitiveBuilder<A>,
        convert: impl Fn(T) -> Result<A::Native, TierError>,
    ) -> Result<PrimitiveArray<A>, TierError>
    where
        A: ArrowPrimitiveType,
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        for r in self.rows {
            let v = decode::<T>(r, self.i, self.name)?
                .map(&convert)
                .transpose()?;
            b.append_option(v);
        }
        Ok(b.finish())
    }

    /// Uuids as PostgreSQL prints them, as 16-byte values.
    fn uuids(&self) -> Result<FixedSizeBinaryArray, TierError> {
        let mut b = FixedSizeBinaryBuilder::with_capacity(self.rows.len(), 16);
        for r in self.rows {
            match decode::<String>(r, self.i, self.name)? {
                Some(t) => {
                    b.append_value(parse_uuid(&t, self.name)?)
                        .map_err(|e| value_error(self.name, e))?;
                }
                None => b.append_null(),
            }
        }
        Ok(b.finish())
    }
}

fn value_error(column: &str, e: impl std::fmt::Display) -> TierError {
    TierError::Value {
        column: column.to_owned(),
        detail: e.to_string(),
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn json_float(out: &mut String, v: f64, shortest: String) {
    if v.is_nan() {
        out.push_str("\"NaN\"");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        out.push_str(&shortest);
    }
}

/// Appends row `row` of `batch` as a JSON object PostgreSQL reads back to the same values.
pub fn row_to_json(decl: &TableDecl, batch: &RecordBatch, row: usize, out: &mut String) {
    out.push('{');
    for (i, c) in decl.columns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_string(out, c.name.as_str());
        out.push(':');
        let a = batch.column(i);
        if a.is_null(row) {
            out.push_str("null");
            continue;
        }
        value_to_json(c.kind, a, row, out);
    }
    out.push('}');
}

/// Appends the (non-null) value at `row` of `a`, a column of kind `kind`, as JSON.
fn value_to_json(kind: ColumnKind, a: &ArrayRef, row: usize, out: &mut String) {
    match kind {
        ColumnKind::Int16 => {
            let _ = write!(out, "{}", a.as_primitive::<Int16Type>().value(row));
        }
        ColumnKind::Int32 => {
            let _ = write!(out, "{}", a.as_primitive::<Int32Type>().value(row));
        }
        ColumnKind::Int64 => {
            let _ = write!(out, "{}", a.as_primitive::<Int64Type>().value(row));
        }
        ColumnKind::Float32 => {
            let v = a.as_primitive::<Float32Type>().value(row);
            // Shortest text that reads back to the same f32.
            json_float(out, f64::from(v), format!("{v:?}"));
        }
        ColumnKind::Float64 => {
            let v = a.as_primitive::<Float64Type>().value(row);
            json_float(out, v, format!("{v:?}"));
        }
        ColumnKind::Decimal { scale, .. } => {
            let v = a.as_primitive::<Decimal128Type>().value(row);
            json_string(out, &format_decimal(v, scale));
        }
        // PostgreSQL's text of the value: json_populate_record feeds a JSON string to the
        // column type's input function, which reads it back exactly.
        ColumnKind::NumericText | ColumnKind::PgText | ColumnKind::Text => {
            json_string(out, a.as_string::<i32>().value(row));
        }
        // A nested JSON value (PostgreSQL's own valid text): json_populate_record keeps
        // its exact text for `json`, and parses it for `jsonb`.
        ColumnKind::Json | ColumnKind::Jsonb => out.push_str(a.as_string::<i32>().value(row)),
        ColumnKind::Bool => {
            out.push_str(if a.as_boolean().value(row) {
                "true"
            } else {
                "false"
            });
        }
        ColumnKind::Date => {
            let days = a.as_primitive::<Date32Type>().value(row);
            let d = EPOCH + chrono::Duration::days(i64::from(days));
            json_string(out, &d.format("%Y-%m-%d").to_string());
        }
        ColumnKind::Timestamp | ColumnKind::TimestampTz => {
            let micros = a.as_primitive::<TimestampMicrosecondType>().value(row);
            json_string(out, &timestamp_text(kind, micros));
        }
        ColumnKind::Uuid => {
            json_string(out, &format_uuid(a.as_fixed_size_binary().value(row)));
        }
        ColumnKind::Bytes => json_string(out, &bytea_text(a.as_binary::<i32>().value(row))),
    }
}

/// A timestamp (`timestamptz`: with its `+00:00`) as PostgreSQL reads it, to the microsecond.
fn timestamp_text(kind: ColumnKind, micros: i64) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| {
            let tz = if kind == ColumnKind::TimestampTz {
                "+00:00"
            } else {
                ""
            };
            format!("{}{tz}", t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f"))
        })
        .unwrap_or_default()
}

/// Bytes in `bytea`'s hex input form: `\x` and two hex digits a byte.
fn bytea_text(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(2 + bytes.len() * 2);
    hex.push_str("\\x");
    for b in bytes {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// Rows `rows` of `batch` as a JSON array for `json_populate_recordset`.
pub fn rows_to_json(
    decl: &TableDecl,
    batch: &RecordBatch,
    rows: impl IntoIterator<Item = usize>,
) -> String {
    let mut out = String::from("[");
    for (n, row) in rows.into_iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        row_to_json(decl, batch, row, &mut out);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_round_trip_through_text() {
        for (text, scale) in [
            ("0.00", 2),
            ("-0.05", 2),
            ("123456789012.34", 2),
            ("7", 0),
            ("-1.000", 3),
        ] {
            let v = parse_decimal(text, scale, "c").unwrap();
            assert_eq!(format_decimal(v, scale), text);
        }
        assert!(parse_decimal("NaN", 2, "c").is_err());
        assert!(parse_decimal("1.5", 2, "c").is_err());
    }

    #[test]
    fn uuids_round_trip() {
        let text = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        assert_eq!(format_uuid(&parse_uuid(text, "c").unwrap()), text);
        assert!(parse_uuid("nope", "c").is_err());
    }
}
