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
//! | enums, arrays, `interval`, `time`, `timetz`, `inet`, `cidr`, `macaddr` | Utf8, PostgreSQL's own text, which the type's input function reads back exactly |
//!
//! A domain is stored as its base type. Every field records the column's PostgreSQL type
//! (`ferry.pg_type`, users' types schema-qualified), so a segment says what its text means.
//! Anything else (ranges, geometric types, `money`, composite types…) is refused when the
//! table is declared: a value Ferry cannot round-trip must never be archived.

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use ferry_domain::{SqlIdent, TenantKeyType};
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
    /// Any other value kept as PostgreSQL's text form (enums, arrays, intervals…): the type's
    /// input function reads it back exactly.
    PgText,
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
            "interval"
            | "time without time zone"
            | "time with time zone"
            | "inet"
            | "cidr"
            | "macaddr" => ColumnKind::PgText,
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
            ColumnKind::NumericText
            | ColumnKind::PgText
            | ColumnKind::Text
            | ColumnKind::Json
            | ColumnKind::Jsonb => DataType::Utf8,
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
            | ColumnKind::PgText
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
    /// As spliced into casts: a built-in type as `format_type` prints it, a user's type
    /// schema-qualified and quoted by PostgreSQL (`"app"."status"[]`).
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
    /// The tenant column's type: ids are bound as text and cast to it.
    pub tenant_type: TenantKeyType,
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
        let tenant_type = tenant_key_type(&rows, &tenant, &name)?;
        let columns = map_columns(d, rows, &name, &tenant, &age, &key)?;
        check_key_kinds(&columns, &key)?;
        check_age(&columns, &age, &name)?;
        Ok(TableDecl {
            schema,
            table,
            tenant,
            tenant_type,
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

    /// `alias.tenant = CAST($param AS <the tenant column's type>)`.
    pub fn tenant_match(&self, alias: &str, param: usize) -> String {
        format!(
            "{alias}.{} = {}",
            self.tenant.quoted(),
            self.tenant_type.cast_param(param)
        )
    }

    /// Whether `tenant` is a canonical value of the tenant column's type: checked before any
    /// statement binds it.
    pub fn check_tenant(&self, tenant: &ferry_domain::TenantId) -> Result<(), TierError> {
        self.tenant_type
            .check(tenant)
            .map_err(|mismatch| TierError::TenantKey {
                mismatch,
                column: format!("{}.{}.{}", self.schema, self.table, self.tenant),
                ty: self.tenant_type.to_string(),
            })
    }

    /// Index of a column in [`TableDecl::columns`].
    pub fn position(&self, name: &SqlIdent) -> Option<usize> {
        self.columns.iter().position(|c| &c.name == name)
    }
}

/// One column as the catalogue describes it.
struct CatalogColumn {
    name: String,
    /// Spelled for casts (see [`Column::pg_type`]).
    pg_type: String,
    /// The built-in type that decides the kind, as `format_type` prints it (a domain's base
    /// type), or `None` for a value kept as PostgreSQL's text (an enum, an array, a domain
    /// over one).
    base: Option<String>,
    /// The type after unwrapping a domain, for the tenant column's check.
    tenant_base: String,
    nullable: bool,
}

type CatalogRow = (
    String,         // name
    String,         // format_type
    bool,           // nullable
    bool,           // an array
    String,         // typtype
    bool,           // in pg_catalog
    String,         // quoted and qualified (an array: its element's, then [])
    Option<String>, // a domain's base type
    Option<bool>,   // a domain over an enum or an array
);

const COLUMNS: &str = "
SELECT a.attname::text,
       format_type(a.atttypid, a.atttypmod),
       NOT a.attnotnull,
       t.typcategory = 'A' AND t.typelem <> 0,
       t.typtype::text,
       tn.nspname = 'pg_catalog',
       CASE WHEN t.typcategory = 'A' AND t.typelem <> 0
            THEN (SELECT quote_ident(en.nspname) || '.' || quote_ident(e.typname) || '[]'
                  FROM pg_type e JOIN pg_namespace en ON en.oid = e.typnamespace
                  WHERE e.oid = t.typelem)
            ELSE quote_ident(tn.nspname) || '.' || quote_ident(t.typname) END,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
       CASE WHEN t.typtype = 'd' THEN (SELECT b.typtype = 'e' OR b.typcategory = 'A'
                                       FROM pg_type b WHERE b.oid = t.typbasetype) END
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

/// The table's columns from the catalogue, in order.
async fn read_columns(
    pool: &PgPool,
    qualified: &str,
    name: &str,
) -> Result<Vec<CatalogColumn>, TierError> {
    let rows: Vec<CatalogRow> = sqlx::query_as(COLUMNS)
        .bind(qualified)
        .fetch_all(pool)
        .await
        .map_err(|e| TierError::db("read the table's columns", e))?;
    if rows.is_empty() {
        return Err(TierError::Declaration(format!(
            "table {name} does not exist (or has no columns)"
        )));
    }
    Ok(rows.into_iter().map(catalog_column).collect())
}

fn catalog_column(row: CatalogRow) -> CatalogColumn {
    let (name, formatted, nullable, is_array, kind, builtin, qualified, domain_base, text_base) =
        row;
    let (pg_type, base) = match (builtin, kind.as_str(), is_array) {
        (true, _, false) => (formatted.clone(), Some(formatted)),
        (true, _, true) => (formatted, None),
        // A user's enum or extension type (`citext`), or an array of any: their text.
        (false, _, true) | (false, "e" | "b", _) => (qualified, None),
        (false, "d", _) if text_base == Some(true) => (qualified, None),
        (false, "d", _) => (qualified, domain_base.clone()),
        // A composite or range type of the user's own: refused by name below.
        (false, _, _) => (qualified, Some(formatted)),
    };
    CatalogColumn {
        name,
        tenant_base: domain_base.unwrap_or_else(|| pg_type.clone()),
        pg_type,
        base,
        nullable,
    }
}

/// The tenant column's type, which must be one whose values Ferry can check and cast.
fn tenant_key_type(
    rows: &[CatalogColumn],
    tenant: &SqlIdent,
    name: &str,
) -> Result<TenantKeyType, TierError> {
    let column = rows
        .iter()
        .find(|c| c.name == tenant.as_str())
        .ok_or_else(|| {
            TierError::Declaration(format!("tenant column {tenant} is not a column of {name}"))
        })?;
    TenantKeyType::new(&column.pg_type, &column.tenant_base)
        .map_err(|e| TierError::Declaration(format!("tenant column {tenant} of {name}: {e}")))
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
    rows: Vec<CatalogColumn>,
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
            if !rows.iter().any(|c| &c.name == column) {
                return Err(TierError::Declaration(format!(
                    "column {column:?} is not a column of {name}"
                )));
            }
        }
    }
    let mut columns = Vec::new();
    for c in rows.into_iter().filter(|c| wanted(&c.name)) {
        let kind = match &c.base {
            None => Some(ColumnKind::PgText),
            Some(base) => ColumnKind::from_pg(base),
        };
        let kind = kind.ok_or_else(|| {
            TierError::Declaration(format!(
                "column {} of {name} has type {}, which the cold tier \
                 cannot store losslessly; supported: integers, real/double precision, \
                 numeric, text/varchar/char, boolean, date, timestamp, timestamptz, uuid, \
                 json, jsonb, bytea, enums, arrays, interval, time, inet, cidr, macaddr, and \
                 domains over these (leave the column out with `columns`, or change its type)",
                c.name, c.pg_type
            ))
        })?;
        columns.push(Column {
            name: ident("column", &c.name)?,
            pg_type: c.pg_type,
            kind,
            nullable: c.nullable,
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
        assert_eq!(ColumnKind::from_pg("interval"), Some(ColumnKind::PgText));
        assert_eq!(
            ColumnKind::from_pg("time without time zone"),
            Some(ColumnKind::PgText)
        );
        // Arrays, enums and domains are decided from the catalogue (see `catalog_column`),
        // not from the type's printed name.
        for refused in ["integer[]", "point", "money", "int4range", "mood"] {
            assert_eq!(ColumnKind::from_pg(refused), None, "{refused}");
        }
    }
}
