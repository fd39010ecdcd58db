//! A tiered table's declaration: its columns and key read from the PostgreSQL catalogue, each
//! column mapped to the Arrow type that holds every value of it without loss.
//!
//! | PostgreSQL | Arrow / Parquet |
//! |---|---|
//! | `smallint`, `integer`, `bigint` | Int16, Int32, Int64 |
//! | `real`, `double precision` | Float32, Float64 (NaN and infinities kept) |
//! | `numeric(p, s)`, p ≤ 38 | Decimal128(p, s) |
//! | `numeric` (unconstrained) | Utf8, PostgreSQL's own text (any scale, NaN) |
//! | `text`, `varchar(n)`, `char(n)` | Utf8 |
//! | `boolean` | Boolean |
//! | `date` | Date32 |
//! | `timestamp` / `timestamptz` | Timestamp(µs) / Timestamp(µs, "UTC") |
//! | `uuid` | FixedSizeBinary(16) |
//! | `json`, `jsonb` | Utf8, the exact text |
//! | `bytea` | Binary |
//!
//! Anything else (arrays, enums, ranges, intervals, `time`, geometric types, domains…) is
//! refused when the table is declared: a value Ferry cannot round-trip must never be archived.

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use ferry_domain::SqlIdent;
use sqlx::PgPool;

use crate::error::TierError;

/// How a column's values travel between PostgreSQL and Arrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Int16,
    Int32,
    Int64,
    Float32,
    Float64,
    /// `numeric(precision, scale)`.
    Decimal {
        precision: u8,
        scale: i8,
    },
    /// Unconstrained `numeric`, as PostgreSQL's text.
    NumericText,
    Text,
    Bool,
    Date,
    Timestamp,
    TimestampTz,
    Uuid,
    Json,
    Jsonb,
    Bytes,
}

impl ColumnKind {
    /// The kind for a type as `format_type` prints it, or `None` if Ferry cannot archive it.
    pub fn from_pg(ty: &str) -> Option<ColumnKind> {
        let kind = match ty {
            "smallint" => ColumnKind::Int16,
            "integer" => ColumnKind::Int32,
            "bigint" => ColumnKind::Int64,
            "real" => ColumnKind::Float32,
            "double precision" => ColumnKind::Float64,
            "numeric" => ColumnKind::NumericText,
            "text" => ColumnKind::Text,
            "boolean" => ColumnKind::Bool,
            "date" => ColumnKind::Date,
            "timestamp without time zone" => ColumnKind::Timestamp,
            "timestamp with time zone" => ColumnKind::TimestampTz,
            "uuid" => ColumnKind::Uuid,
            "json" => ColumnKind::Json,
            "jsonb" => ColumnKind::Jsonb,
            "bytea" => ColumnKind::Bytes,
            _ => {
                if ty.starts_with("character varying") || ty.starts_with("character(") {
                    return Some(ColumnKind::Text);
                }
                let args = ty.strip_prefix("numeric(")?.strip_suffix(')')?;
                let (p, s) = args.split_once(',')?;
                let (precision, scale): (u8, i8) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
                if precision == 0 || precision > 38 || scale < 0 || scale as u8 > precision {
                    return Some(ColumnKind::NumericText);
                }
                ColumnKind::Decimal { precision, scale }
            }
        };
        Some(kind)
    }

    pub fn arrow(self) -> DataType {
        match self {
            ColumnKind::Int16 => DataType::Int16,
            ColumnKind::Int32 => DataType::Int32,
            ColumnKind::Int64 => DataType::Int64,
            ColumnKind::Float32 => DataType::Float32,
            ColumnKind::Float64 => DataType::Float64,
            ColumnKind::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            ColumnKind::NumericText | ColumnKind::Text | ColumnKind::Json | ColumnKind::Jsonb => {
                DataType::Utf8
            }
            ColumnKind::Bool => DataType::Boolean,
            ColumnKind::Date => DataType::Date32,
            ColumnKind::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnKind::TimestampTz => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            ColumnKind::Uuid => DataType::FixedSizeBinary(16),
            ColumnKind::Bytes => DataType::Binary,
        }
    }

    /// The expression the row reader selects, so every kind arrives in one decodable form.
    fn select(self, column: &str) -> String {
        match self {
            ColumnKind::NumericText
            | ColumnKind::Decimal { .. }
            | ColumnKind::Json
            | ColumnKind::Jsonb
            | ColumnKind::Uuid => format!("t.{column}::text"),
            _ => format!("t.{column}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: SqlIdent,
    /// As `format_type` prints it.
    pub pg_type: String,
    pub kind: ColumnKind,
    pub nullable: bool,
}

/// What a tiered table is, as declared by the operator and read from the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDecl {
    pub schema: SqlIdent,
    pub table: SqlIdent,
    pub tenant: SqlIdent,
    /// The rows' age: rows older than the cutoff go to the cold tier.
    pub age: SqlIdent,
    pub columns: Vec<Column>,
    /// The primary key without the tenant column, in key order: the segments' sort order.
    pub key: Vec<SqlIdent>,
}

/// What the operator names; everything else comes from the catalogue.
#[derive(Debug, Clone)]
pub struct Declaration {
    pub schema: String,
    pub table: String,
    pub tenant_column: String,
    pub age_column: String,
    /// Archive only these columns (the key, tenant and age columns are always included);
    /// `None` archives them all.
    pub columns: Option<Vec<String>>,
}

fn ident(field: &'static str, value: &str) -> Result<SqlIdent, TierError> {
    SqlIdent::new(value).map_err(|source| TierError::Ident { field, source })
}

impl TableDecl {
    /// Reads the table's columns and primary key and maps every column, refusing the
    /// declaration (naming the column and its type) if any cannot be archived losslessly.
    pub async fn declare(pool: &PgPool, d: &Declaration) -> Result<TableDecl, TierError> {
        let schema = ident("schema", &d.schema)?;
        let table = ident("table", &d.table)?;
        let tenant = ident("tenant_column", &d.tenant_column)?;
        let age = ident("age_column", &d.age_column)?;
        let qualified = format!("{}.{}", schema.quoted(), table.quoted());
        let name = format!("{schema}.{table}");
        let rows = read_columns(pool, &qualified, &name).await?;
        let key = read_key(pool, &qualified, &name, &tenant).await?;
        let columns = map_columns(d, rows, &name, &tenant, &age, &key)?;
        check_key_kinds(&columns, &key)?;
        check_age(&columns, &age, &name)?;
        Ok(TableDecl {
            schema,
            table,
            tenant,
            age,
            columns,
            key,
        })
    }

    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.table.quoted())
    }

    /// The Arrow schema of the table's segments, each field carrying its PostgreSQL type.
    pub fn arrow_schema(&self) -> Schema {
        Schema::new(
            self.columns
                .iter()
                .map(|c| {
                    Field::new(c.name.as_str(), c.kind.arrow(), c.nullable).with_metadata(
                        std::collections::HashMap::from([(
                            "ferry.pg_type".to_owned(),
                            c.pg_type.clone(),
                        )]),
                    )
                })
                .collect::<Vec<_>>(),
        )
    }

    /// The select list the row reader uses, in column order.
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.kind.select(&c.name.quoted()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn key_list(&self, alias: &str) -> String {
        self.key
            .iter()
            .map(|k| format!("{alias}.{}", k.quoted()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn column(&self, name: &SqlIdent) -> Option<&Column> {
        self.columns.iter().find(|c| &c.name == name)
    }

    /// The kind of a key column.
    pub fn key_kind(&self, key: &SqlIdent) -> Result<ColumnKind, TierError> {
        self.column(key)
            .map(|c| c.kind)
            .ok_or_else(|| TierError::Declaration(format!("no key column {key}")))
    }

    /// `t.k1 = CAST($first AS type1) AND …`: a row by key, the values bound as text.
    pub fn key_match(&self, first_param: usize) -> String {
        self.key
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let ty = self.column(k).map_or("text", |c| c.pg_type.as_str());
                format!("t.{} = CAST(${} AS {ty})", k.quoted(), first_param + i)
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Index of a column in [`TableDecl::columns`].
    pub fn position(&self, name: &SqlIdent) -> Option<usize> {
        self.columns.iter().position(|c| &c.name == name)
    }
}

/// The table's columns from the catalogue, in order: name, type as `format_type` prints it,
/// nullable.
async fn read_columns(
    pool: &PgPool,
    qualified: &str,
    name: &str,
) -> Result<Vec<(String, String, bool)>, TierError> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull
         FROM pg_attribute a
         WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind(qualified)
    .fetch_all(pool)
    .await
    .map_err(|e| TierError::db("read the table's columns", e))?;
    if rows.is_empty() {
        return Err(TierError::Declaration(format!(
            "table {name} does not exist (or has no columns)"
        )));
    }
    Ok(rows)
}

/// The primary key without the tenant column, in key order; the tenant column must be in it.
async fn read_key(
    pool: &PgPool,
    qualified: &str,
    name: &str,
    tenant: &SqlIdent,
) -> Result<Vec<SqlIdent>, TierError> {
    let key_names: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text
         FROM pg_index i
         JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = to_regclass($1) AND i.indisprimary
         ORDER BY k.n",
    )
    .bind(qualified)
    .fetch_all(pool)
    .await
    .map_err(|e| TierError::db("read the table's primary key", e))?;
    if !key_names.iter().any(|k| k == tenant.as_str()) {
        return Err(TierError::Declaration(format!(
            "table {name} needs a primary key that includes the tenant column \
             {tenant}: segments are sorted and looked up by (tenant, key)"
        )));
    }
    let key: Vec<SqlIdent> = key_names
        .iter()
        .filter(|k| k.as_str() != tenant.as_str())
        .map(|k| ident("key column", k))
        .collect::<Result<_, _>>()?;
    if key.is_empty() {
        return Err(TierError::Declaration(format!(
            "the primary key of {name} is only the tenant column; a row key is needed"
        )));
    }
    Ok(key)
}

/// The columns to archive (those `d.columns` names, or all; the tenant, age and key columns
/// always), each mapped to its kind.
fn map_columns(
    d: &Declaration,
    rows: Vec<(String, String, bool)>,
    name: &str,
    tenant: &SqlIdent,
    age: &SqlIdent,
    key: &[SqlIdent],
) -> Result<Vec<Column>, TierError> {
    let wanted = |column: &str| {
        d.columns
            .as_ref()
            .is_none_or(|only| only.iter().any(|c| c == column))
            || column == tenant.as_str()
            || column == age.as_str()
            || key.iter().any(|k| k.as_str() == column)
    };
    if let Some(only) = &d.columns {
        for column in only {
            if !rows.iter().any(|(n, _, _)| n == column) {
                return Err(TierError::Declaration(format!(
                    "column {column:?} is not a column of {name}"
                )));
            }
        }
    }
    let mut columns = Vec::new();
    for (column, pg_type, nullable) in rows.into_iter().filter(|(n, _, _)| wanted(n)) {
        let kind = ColumnKind::from_pg(&pg_type).ok_or_else(|| {
            TierError::Declaration(format!(
                "column {column} of {name} has type {pg_type}, which the cold tier \
                 cannot store losslessly; supported: integers, real/double precision, \
                 numeric, text/varchar/char, boolean, date, timestamp, timestamptz, uuid, \
                 json, jsonb, bytea (leave the column out with `columns`, or change its type)"
            ))
        })?;
        columns.push(Column {
            name: ident("column", &column)?,
            pg_type,
            kind,
            nullable,
        });
    }
    Ok(columns)
}

fn check_key_kinds(columns: &[Column], key: &[SqlIdent]) -> Result<(), TierError> {
    for k in key {
        if let Some(c) = columns.iter().find(|c| &c.name == k)
            && !crate::key::is_key_kind(c.kind)
        {
            return Err(TierError::Declaration(format!(
                "key column {k} has type {}; key columns must be integers, text or uuid",
                c.pg_type
            )));
        }
    }
    Ok(())
}

fn check_age(columns: &[Column], age: &SqlIdent, name: &str) -> Result<(), TierError> {
    match columns.iter().find(|c| &c.name == age) {
        None => Err(TierError::Declaration(format!(
            "age column {age} is not a column of {name}"
        ))),
        Some(c)
            if !matches!(
                c.kind,
                ColumnKind::Date | ColumnKind::Timestamp | ColumnKind::TimestampTz
            ) =>
        {
            Err(TierError::Declaration(format!(
                "age column {age} has type {}; it must be a date, timestamp or timestamptz",
                c.pg_type
            )))
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_lossless_arrow_types_or_are_refused() {
        assert_eq!(
            ColumnKind::from_pg("numeric(12,2)"),
            Some(ColumnKind::Decimal {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(
            ColumnKind::from_pg("numeric(60,2)"),
            Some(ColumnKind::NumericText)
        );
        assert_eq!(
            ColumnKind::from_pg("character varying(20)"),
            Some(ColumnKind::Text)
        );
        assert_eq!(ColumnKind::from_pg("character(3)"), Some(ColumnKind::Text));
        for refused in [
            "interval",
            "integer[]",
            "time without time zone",
            "point",
            "mood",
        ] {
            assert_eq!(ColumnKind::from_pg(refused), None, "{refused}");
        }
    }
}
