//! How a column's type is named in the statements Ferry builds.
//!
//! Built-in types are spelled as `format_type` prints them (`numeric(12,2)`,
//! `timestamp with time zone[]`) and must pass a conservative character check. Types a user
//! created (enums, domains, an extension's base types) are spelled schema-qualified and quoted
//! by PostgreSQL's own `quote_ident`, so an enum in a schema off the search path, or one whose
//! name needs quotes, is named exactly on both sides; arrays of them get `[]`. Composite,
//! range and pseudo types of users' own are refused with the column named.

use ferry_domain::SqlIdent;
use sqlx::PgPool;

use super::{Column, Table};
use crate::error::CopyError;

/// What kind of type a user created, as `pg_type.typtype` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserTypeKind {
    Enum,
    Domain,
    /// A base type from an extension (`citext`, `vector`): it must exist on both sides.
    Base,
}

/// A user-created type a column uses (directly, or as an array's element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserType {
    pub oid: i64,
    pub kind: UserTypeKind,
    /// `"schema"."name"`, quoted by PostgreSQL.
    pub qualified: String,
    /// The schema, quoted, for `CREATE SCHEMA IF NOT EXISTS`.
    pub schema: String,
}

/// A column as the catalogue describes it: what the plan compares and splices, plus what
/// creating it elsewhere needs.
#[derive(Debug, Clone)]
pub(crate) struct CatalogColumn {
    pub column: Column,
    pub not_null: bool,
    /// The type after unwrapping a domain (as `format_type` prints it): what the tenant
    /// column's check reads.
    pub base_type: String,
    /// `COLLATE "schema"."name"` when the column's collation is not its type's default.
    pub collate: Option<String>,
    /// The default expression, as `pg_get_expr` prints it.
    pub default: Option<String>,
    pub user_type: Option<UserType>,
}

type Row = (
    String,         // attname
    String,         // format_type
    bool,           // attnotnull
    Option<String>, // collation name (compared between sides)
    Option<String>, // COLLATE clause when not the type's default
    bool,           // is an array
    String,         // element typtype
    bool,           // element in pg_catalog
    String,         // element, quoted and qualified
    String,         // element's schema, quoted
    i64,            // element oid
    Option<String>, // base type of a domain element
    Option<String>, // default expression
);

const COLUMNS: &str = "
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       a.attnotnull,
       CASE WHEN a.attcollation = 0 THEN NULL
            ELSE (SELECT collname FROM pg_collation WHERE oid = a.attcollation) END,
       CASE WHEN a.attcollation = 0 OR a.attcollation = t.typcollation THEN NULL
            ELSE (SELECT 'COLLATE ' || quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                  FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                  WHERE co.oid = a.attcollation) END,
       t.typcategory = 'A' AND t.typelem <> 0,
       e.typtype::text,
       en.nspname = 'pg_catalog',
       quote_ident(en.nspname) || '.' || quote_ident(e.typname),
       quote_ident(en.nspname),
       e.oid::bigint,
       CASE WHEN e.typtype = 'd' THEN format_type(e.typbasetype, e.typtypmod) END,
       pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type e ON e.oid = CASE WHEN t.typcategory = 'A' AND t.typelem <> 0 THEN t.typelem ELSE t.oid END
JOIN pg_namespace en ON en.oid = e.typnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

pub(super) fn type_is_safe(ty: &str) -> bool {
    !ty.is_empty()
        && ty.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '(' | ')' | ',' | '[' | ']')
        })
}

/// A table's columns in order (none if it does not exist).
pub(crate) async fn read_columns(
    pool: &PgPool,
    table: &Table,
) -> Result<Vec<CatalogColumn>, CopyError> {
    let rows: Vec<Row> = sqlx::query_as(COLUMNS)
        .bind(table.schema.as_str())
        .bind(table.name.as_str())
        .fetch_all(pool)
        .await
        .map_err(|e| CopyError::db("read table columns", e))?;
    rows.into_iter().map(|row| column(table, row)).collect()
}

fn column(table: &Table, row: Row) -> Result<CatalogColumn, CopyError> {
    let (name, formatted, not_null, collation, collate, is_array, kind, builtin, qualified) = (
        row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8,
    );
    let (schema, oid, domain_base, default) = (row.9, row.10, row.11, row.12);
    let name = SqlIdent::new(name.clone())
        .map_err(|e| CopyError::Plan(format!("{table}: column {name:?} cannot be copied: {e}")))?;
    let refuse = |what: &str| {
        CopyError::Plan(format!(
            "{table}: column {name} has type {formatted}, {what}, which Ferry does not copy"
        ))
    };
    let (ty, user_type) = if builtin {
        if !type_is_safe(&formatted) {
            return Err(refuse("a type name Ferry cannot splice safely"));
        }
        (formatted.clone(), None)
    } else {
        let kind = match kind.as_str() {
            "e" => UserTypeKind::Enum,
            "d" => UserTypeKind::Domain,
            "b" => UserTypeKind::Base,
            "c" => return Err(refuse("a composite type")),
            "r" | "m" => return Err(refuse("a range type of its own")),
            _ => return Err(refuse("a pseudo-type")),
        };
        // An extension type's modifier (`vector(3)`): format_type prints it after the name.
        let modifier = match (kind, formatted.find('(')) {
            (UserTypeKind::Base, Some(at)) => {
                let m = formatted[at..].trim_end_matches("[]");
                if !type_is_safe(m) {
                    return Err(refuse("a type modifier Ferry cannot splice safely"));
                }
                m.to_owned()
            }
            _ => String::new(),
        };
        let ty = format!("{qualified}{modifier}{}", if is_array { "[]" } else { "" });
        let user = UserType {
            oid,
            kind,
            qualified,
            schema,
        };
        (ty, Some(user))
    };
    let base_type = match (&user_type, domain_base) {
        (Some(u), Some(base)) if u.kind == UserTypeKind::Domain && !is_array => base,
        _ => ty.clone(),
    };
    Ok(CatalogColumn {
        column: Column {
            name,
            ty,
            collation,
        },
        not_null,
        base_type,
        collate,
        default,
        user_type,
    })
}

/// An enum's labels in their order.
pub(crate) async fn enum_labels(pool: &PgPool, qualified: &str) -> Result<Vec<String>, CopyError> {
    sqlx::query_scalar(
        "SELECT enumlabel::text FROM pg_enum WHERE enumtypid = to_regtype($1) ORDER BY enumsortorder",
    )
    .bind(qualified)
    .fetch_all(pool)
    .await
    .map_err(|e| CopyError::db("read an enum's labels", e))
}

/// Whether a type of this name exists in the database.
pub(crate) async fn type_exists(pool: &PgPool, qualified: &str) -> Result<bool, CopyError> {
    sqlx::query_scalar("SELECT to_regtype($1) IS NOT NULL")
        .bind(qualified)
        .fetch_one(pool)
        .await
        .map_err(|e| CopyError::db("look a type up", e))
}
