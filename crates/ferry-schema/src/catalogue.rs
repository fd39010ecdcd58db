//! What the database holds in the plan's schema, read once per command: tables with their
//! columns and primary keys, constraint and index names, types, and PostgreSQL's reserved
//! words. Plans are checked against it; the tests compare snapshots of it ([`snapshot`]).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;

use crate::error::{DbContext, SchemaError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatColumn {
    pub name: String,
    /// As `format_type` prints it.
    pub ty: String,
    pub not_null: bool,
    pub has_default: bool,
    /// The default expression, as `pg_get_expr` prints it.
    #[serde(default)]
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatTable {
    pub name: String,
    pub columns: Vec<CatColumn>,
    pub primary_key: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalogue {
    pub schema: String,
    pub tables: Vec<CatTable>,
    /// Constraint names per table.
    pub constraints: BTreeMap<String, BTreeSet<String>>,
    pub indexes: BTreeSet<String>,
    /// Types (enums, domains, composites) in the schema.
    pub types: BTreeSet<String>,
    /// Words PostgreSQL reserves (need quoting as names).
    pub reserved: BTreeSet<String>,
    pub schemas: BTreeSet<String>,
}

impl Catalogue {
    pub async fn read(pool: &PgPool, schema: &str) -> Result<Catalogue, SchemaError> {
        let columns: Vec<ColumnRow> = sqlx::query_as(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
                    a.attnotnull, a.atthasdef, pg_get_expr(d.adbin, d.adrelid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
             ORDER BY c.relname, a.attnum",
        )
        .bind(schema)
        .fetch_all(pool)
        .await
        .db("read the schema's columns")?;
        let keys: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, a.attname::text
             FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = u.attnum
             WHERE n.nspname = $1 AND k.contype = 'p'
             ORDER BY c.relname, u.ord",
        )
        .bind(schema)
        .fetch_all(pool)
        .await
        .db("read the primary keys")?;
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT c.relname::text, k.conname::text FROM pg_constraint k
             JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1",
        )
        .bind(schema)
        .fetch_all(pool)
        .await
        .db("read the constraints")?;
        let names = |kinds: &'static str| {
            sqlx::query_scalar::<_, String>(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind::text = ANY(string_to_array($2, ','))",
            )
            .bind(schema)
            .bind(kinds)
            .fetch_all(pool)
        };
        let indexes = names("i,I").await.db("read the indexes")?;
        let types: Vec<String> = sqlx::query_scalar(
            "SELECT t.typname::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname = $1 AND t.typtype IN ('e', 'd', 'c')
               AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)",
        )
        .bind(schema)
        .fetch_all(pool)
        .await
        .db("read the types")?;
        let reserved: Vec<String> =
            sqlx::query_scalar("SELECT word FROM pg_get_keywords() WHERE catcode IN ('R', 'T')")
                .fetch_all(pool)
                .await
                .db("read the reserved words")?;
        let schemas: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace")
            .fetch_all(pool)
            .await
            .db("read the schemas")?;
        Ok(assemble(
            schema,
            columns,
            keys,
            constraints,
            indexes,
            types,
            reserved,
            schemas,
        ))
    }

    pub fn table(&self, name: &str) -> Option<&CatTable> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// (table, column, type, not null, has default, default).
type ColumnRow = (String, String, String, bool, bool, Option<String>);

#[allow(clippy::too_many_arguments)]
fn assemble(
    schema: &str,
    columns: Vec<ColumnRow>,
    keys: Vec<(String, String)>,
    constraints: Vec<(String, String)>,
    indexes: Vec<String>,
    types: Vec<String>,
    reserved: Vec<String>,
    schemas: Vec<String>,
) -> Catalogue {
    let mut tables: Vec<CatTable> = Vec::new();
    for (table, name, ty, not_null, has_default, default) in columns {
        if tables.last().is_none_or(|t| t.name != table) {
            tables.push(CatTable {
                name: table.clone(),
                columns: Vec::new(),
                primary_key: Vec::new(),
            });
        }
        if let Some(t) = tables.last_mut() {
            t.columns.push(CatColumn {
                name,
                ty,
                not_null,
                has_default,
                default,
            });
        }
    }
    for (table, column) in keys {
        if let Some(t) = tables.iter_mut().find(|t| t.name == table) {
            t.primary_key.push(column);
        }
    }
    let mut by_table: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (table, name) in constraints {
        by_table.entry(table).or_default().insert(name);
    }
    Catalogue {
        schema: schema.to_owned(),
        tables,
        constraints: by_table,
        indexes: indexes.into_iter().collect(),
        types: types.into_iter().collect(),
        reserved: reserved.into_iter().collect(),
        schemas: schemas.into_iter().collect(),
    }
}

/// Every catalogue object of a schema that a plan can touch, as sorted lines of text:
/// columns (with type, nullability, default), constraints (with definition and validity),
/// indexes (with definition and validity), triggers, functions, views and types (enum labels
/// included). Two snapshots are equal exactly when a rollback left nothing behind.
pub async fn snapshot(pool: &PgPool, schema: &str) -> Result<Vec<String>, SchemaError> {
    let sql = "
        SELECT 'column ' || c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
               || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
               || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = $1 AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v')
        UNION ALL
        SELECT 'constraint ' || c.relname || '.' || k.conname || ' ' || pg_get_constraintdef(k.oid)
               || CASE WHEN k.convalidated THEN '' ELSE ' (not valid)' END
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
        UNION ALL
        SELECT 'index ' || pg_get_indexdef(i.indexrelid)
               || CASE WHEN i.indisvalid THEN '' ELSE ' (invalid)' END
        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
        UNION ALL
        SELECT 'trigger ' || c.relname || '.' || t.tgname || ' ' || pg_get_triggerdef(t.oid)
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND NOT t.tgisinternal
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure::text
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1
        UNION ALL
        SELECT 'view ' || c.relname || ' ' || pg_get_viewdef(c.oid)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind = 'v'
        UNION ALL
        SELECT 'table ' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
        UNION ALL
        SELECT 'type ' || t.typname || coalesce(' ' || (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
               FROM pg_enum e WHERE e.enumtypid = t.oid), '')
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = $1 AND t.typtype IN ('e', 'd')
        UNION ALL
        SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname LIKE $1 || '\\_%'
        ORDER BY 1";
    let mut lines: Vec<String> = sqlx::query_scalar(sql)
        .bind(schema)
        .fetch_all(pool)
        .await
        .db("snapshot the catalogue")?;
    lines.sort();
    Ok(lines)
}
