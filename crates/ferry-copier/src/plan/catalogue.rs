//! What the copier may assume about the two tables, read from PostgreSQL's catalogues and
//! checked once, before anything is copied: the columns (types as `format_type` prints them,
//! spliced into casts, so only plain type names pass), the primary key, the tenant and
//! version columns, and a target that matches the source. How a column's type is read, or
//! what the tenant column may be, is decided here and nowhere else.

use ferry_domain::SqlIdent;
use sqlx::PgPool;

use super::{Column, Table, TablePlan};
use crate::config::Names;
use crate::error::CopyError;

/// Whether inserts into `table` may store something other than what they were given: a
/// user trigger or a rewrite rule on it (or the table cannot be found, to be safe). Without
/// either, a row as inserted is the source row as read (the plan requires the same column
/// types), so the hash of the one stands for the other.
pub async fn rewrites_inserts(pool: &PgPool, table: &Table) -> Result<bool, CopyError> {
    let found: Option<bool> = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_trigger AS g WHERE g.tgrelid = c.oid AND NOT g.tgisinternal)
             OR EXISTS (SELECT 1 FROM pg_rewrite AS r WHERE r.ev_class = c.oid)
         FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(table.schema.as_str())
    .bind(table.name.as_str())
    .fetch_optional(pool)
    .await
    .map_err(|e| CopyError::db("read triggers and rules", e))?;
    Ok(found.unwrap_or(true))
}

/// Identifies a database: two pools with the same identity reach the same one.
pub(crate) async fn database_identity(pool: &PgPool) -> Result<String, CopyError> {
    sqlx::query_scalar(
        "SELECT current_database() || '@' || pg_postmaster_start_time()::text || ':' \
         || coalesce(inet_server_port()::text, 'socket')",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| CopyError::db("identify the database", e))
}

pub(crate) async fn same_database(a: &PgPool, b: &PgPool) -> Result<bool, CopyError> {
    Ok(database_identity(a).await? == database_identity(b).await?)
}

pub(super) fn type_is_safe(ty: &str) -> bool {
    !ty.is_empty()
        && ty.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '(' | ')' | ',' | '[' | ']')
        })
}

async fn read_columns(pool: &PgPool, table: &Table) -> Result<Vec<Column>, CopyError> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod),
                CASE WHEN a.attcollation = 0 THEN NULL
                     ELSE (SELECT collname FROM pg_collation WHERE oid = a.attcollation) END
         FROM pg_attribute a
         JOIN pg_class c ON c.oid = a.attrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
         ORDER BY a.attnum",
    )
    .bind(table.schema.as_str())
    .bind(table.name.as_str())
    .fetch_all(pool)
    .await
    .map_err(|e| CopyError::db("read table columns", e))?;
    rows.into_iter()
        .map(|(name, ty, collation)| {
            let name = SqlIdent::new(name.clone()).map_err(|e| {
                CopyError::Plan(format!("{table}: column {name:?} cannot be copied: {e}"))
            })?;
            if !type_is_safe(&ty) {
                return Err(CopyError::Plan(format!(
                    "{table}: column {name} has type {ty:?}, which Ferry does not copy"
                )));
            }
            Ok(Column {
                name,
                ty,
                collation,
            })
        })
        .collect()
}

async fn primary_key(pool: &PgPool, table: &Table) -> Result<Vec<String>, CopyError> {
    sqlx::query_scalar(
        "SELECT a.attname
         FROM pg_index i
         JOIN pg_class c ON c.oid = i.indrelid
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
         WHERE n.nspname = $1 AND c.relname = $2 AND i.indisprimary
         ORDER BY k.ord",
    )
    .bind(table.schema.as_str())
    .bind(table.name.as_str())
    .fetch_all(pool)
    .await
    .map_err(|e| CopyError::db("read primary key", e))
}

impl TablePlan {
    /// Reads both tables from their catalogues and checks they can be copied between.
    /// With `create_target`, a missing target table is created `LIKE` the source (same
    /// database only).
    pub async fn load(
        names: &Names,
        source_pool: &PgPool,
        target_pool: &PgPool,
        create_target: bool,
    ) -> Result<TablePlan, CopyError> {
        let source = Table {
            schema: names.source_schema.clone(),
            name: names.source_table.clone(),
        };
        let target = Table {
            schema: names.target_schema.clone(),
            name: names.target_table.clone(),
        };
        let (columns, key_names) = read_source(source_pool, &source).await?;
        let tenant = named_column(&source, &columns, &names.tenant_column, "tenant")?;
        let version = named_column(&source, &columns, &names.version_column, "version")?;
        check_version_type(&source, &version)?;
        let (key, order) = keyset(&source, &columns, &key_names, &tenant)?;
        if source == target && same_database(source_pool, target_pool).await? {
            return Err(CopyError::Plan(format!(
                "source and target are the same table {source} in the same database; pass the target database's URL (--target-url) or name another table"
            )));
        }
        let target_columns = read_target(target_pool, &source, &target, create_target).await?;
        check_target_matches(
            target_pool,
            &source,
            &target,
            &target_columns,
            &columns,
            &key_names,
        )
        .await?;
        Ok(TablePlan {
            source,
            target,
            columns,
            tenant: tenant.name,
            version: version.name,
            key,
            order,
        })
    }
}

/// The source's columns and primary key: it must exist, and have a key to page and upsert by.
async fn read_source(
    pool: &PgPool,
    source: &Table,
) -> Result<(Vec<Column>, Vec<String>), CopyError> {
    let columns = read_columns(pool, source).await?;
    if columns.is_empty() {
        return Err(CopyError::Plan(format!(
            "source table {source} does not exist"
        )));
    }
    let key_names = primary_key(pool, source).await?;
    if key_names.is_empty() {
        return Err(CopyError::Plan(format!(
            "source table {source} has no primary key; Ferry copies in key order and upserts by key, so it needs one"
        )));
    }
    Ok((columns, key_names))
}

fn find_column(columns: &[Column], name: &str) -> Option<Column> {
    columns.iter().find(|c| c.name.as_str() == name).cloned()
}

/// The configured `what` column (tenant, version) of the source, which must have it.
fn named_column(
    source: &Table,
    columns: &[Column],
    name: &SqlIdent,
    what: &str,
) -> Result<Column, CopyError> {
    find_column(columns, name.as_str())
        .ok_or_else(|| CopyError::Plan(format!("{source} has no {what} column {name}")))
}

/// The version guard compares versions, so every write must increase them.
fn check_version_type(source: &Table, version: &Column) -> Result<(), CopyError> {
    if !matches!(
        version.ty.as_str(),
        "bigint"
            | "integer"
            | "smallint"
            | "timestamp with time zone"
            | "timestamp without time zone"
    ) {
        return Err(CopyError::Plan(format!(
            "version column {} of {source} is {}; it must be an integer or a timestamp that every write increases",
            version.name, version.ty
        )));
    }
    Ok(())
}

/// The primary key's columns (the upsert's conflict target), which must include the tenant,
/// and the keyset order within a tenant: the key without the tenant column, not empty.
fn keyset(
    source: &Table,
    columns: &[Column],
    key_names: &[String],
    tenant: &Column,
) -> Result<(Vec<Column>, Vec<Column>), CopyError> {
    if !key_names.iter().any(|k| k == tenant.name.as_str()) {
        return Err(CopyError::Plan(format!(
            "the primary key of {source} ({}) does not include the tenant column {}; an upsert by it could overwrite another tenant's row with the same key",
            key_names.join(", "),
            tenant.name
        )));
    }
    let key: Vec<Column> = key_names
        .iter()
        .filter_map(|k| find_column(columns, k))
        .collect();
    let order: Vec<Column> = key
        .iter()
        .filter(|c| c.name != tenant.name)
        .cloned()
        .collect();
    if order.is_empty() {
        return Err(CopyError::Plan(format!(
            "the primary key of {source} is the tenant column alone; there is nothing to page through"
        )));
    }
    Ok((key, order))
}

/// The target's columns; with `create_target`, a missing target is created `LIKE` the source
/// first. It must exist.
async fn read_target(
    pool: &PgPool,
    source: &Table,
    target: &Table,
    create_target: bool,
) -> Result<Vec<Column>, CopyError> {
    let mut target_columns = read_columns(pool, target).await?;
    if target_columns.is_empty() && create_target {
        let create = format!(
            "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL)",
            target.schema.quoted(),
            target.quoted(),
            source.quoted()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(pool)
            .await
            .map_err(|e| CopyError::db("create the target table", e))?;
        target_columns = read_columns(pool, target).await?;
    }
    if target_columns.is_empty() {
        return Err(CopyError::Plan(format!(
            "target table {target} does not exist; create it with the same columns and primary key as {source}"
        )));
    }
    Ok(target_columns)
}

/// The target has the source's columns (names, types, collations, order) and primary key, so
/// a row and its key mean the same on both sides.
async fn check_target_matches(
    pool: &PgPool,
    source: &Table,
    target: &Table,
    target_columns: &[Column],
    columns: &[Column],
    key_names: &[String],
) -> Result<(), CopyError> {
    if target_columns != columns {
        return Err(CopyError::Plan(format!(
            "target table {target} does not have the same columns (names, types, collations, order) as {source}"
        )));
    }
    if primary_key(pool, target).await? != key_names {
        return Err(CopyError::Plan(format!(
            "target table {target} does not have the same primary key as {source} ({})",
            key_names.join(", ")
        )));
    }
    Ok(())
}
