//! What the copier may assume about the two tables, read from PostgreSQL's catalogues and
//! checked once, before anything is copied: the columns (types as `format_type` prints them,
//! spliced into casts, so only plain type names pass), the primary key, the tenant and
//! version columns, and a target that matches the source. How a column's type is read, or
//! what the tenant column may be, is decided here and nowhere else.

use ferry_domain::{SqlIdent, TenantKeyType};
use sqlx::PgPool;

use super::create::{create_from_catalogue, create_like};
use super::types::{CatalogColumn, UserTypeKind, enum_labels, read_columns};
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
    /// With `create_target`, a missing target table is created: `LIKE` the source in the
    /// same database, from the source's catalogue in another (see `create`).
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
        let (catalog, key_names) = read_source(source_pool, &source).await?;
        let columns: Vec<Column> = catalog.iter().map(|c| c.column.clone()).collect();
        let tenant = named_column(&source, &catalog, &names.tenant_column, "tenant")?;
        let tenant_type = tenant_key_type(&source, &tenant)?;
        let version = named_column(&source, &catalog, &names.version_column, "version")?;
        check_version_type(&source, &version)?;
        let (key, order) = keyset(&source, &columns, &key_names, &tenant.column)?;
        let same = same_database(source_pool, target_pool).await?;
        if source == target && same {
            return Err(CopyError::Plan(format!(
                "source and target are the same table {source} in the same database; pass the target database's URL (--target-url) or name another table"
            )));
        }
        let sides = Sides {
            source_pool,
            target_pool,
            source: &source,
            target: &target,
            same_database: same,
        };
        let target_columns = read_target(&sides, &catalog, &key_names, create_target).await?;
        check_target_matches(&sides, &target_columns, &catalog, &key_names).await?;
        Ok(TablePlan {
            source,
            target,
            columns,
            tenant: tenant.column.name,
            tenant_type,
            version: version.column.name,
            key,
            order,
        })
    }
}

/// Both tables and their databases, for the checks that read both.
struct Sides<'a> {
    source_pool: &'a PgPool,
    target_pool: &'a PgPool,
    source: &'a Table,
    target: &'a Table,
    same_database: bool,
}

/// The source's columns and primary key: it must exist, and have a key to page and upsert by.
async fn read_source(
    pool: &PgPool,
    source: &Table,
) -> Result<(Vec<CatalogColumn>, Vec<String>), CopyError> {
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
    columns: &[CatalogColumn],
    name: &SqlIdent,
    what: &str,
) -> Result<CatalogColumn, CopyError> {
    columns
        .iter()
        .find(|c| c.column.name == *name)
        .cloned()
        .ok_or_else(|| CopyError::Plan(format!("{source} has no {what} column {name}")))
}

/// The tenant column's type: tenant ids are bound as text and cast to it, so it must be one
/// whose values Ferry can check and spell (see `ferry_domain::tenant_key`).
fn tenant_key_type(source: &Table, tenant: &CatalogColumn) -> Result<TenantKeyType, CopyError> {
    TenantKeyType::new(&tenant.column.ty, &tenant.base_type).map_err(|e| {
        CopyError::Plan(format!(
            "tenant column {} of {source}: {e}",
            tenant.column.name
        ))
    })
}

/// The version guard compares versions, so every write must increase them, and a NULL would
/// make every comparison unknown: the guard would silently skip the write (item 2 of the
/// review). So the column must be NOT NULL as well as of an ordered type.
fn check_version_type(source: &Table, catalog: &CatalogColumn) -> Result<(), CopyError> {
    let version = &catalog.column;
    if !catalog.not_null {
        return Err(CopyError::Plan(format!(
            "version column {name} of {source} allows NULL, and a NULL version defeats the version guard (NULL < v is never true, so a write would be skipped); \
             make it NOT NULL without a long lock: UPDATE the NULLs in batches, then ADD CONSTRAINT {name}_not_null CHECK ({name} IS NOT NULL) NOT VALID, \
             VALIDATE CONSTRAINT {name}_not_null, ALTER COLUMN {name} SET NOT NULL (it uses the validated constraint and skips the scan)",
            name = version.name
        )));
    }
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

/// The target's columns; with `create_target`, a missing target is created first. It must
/// exist.
async fn read_target(
    sides: &Sides<'_>,
    catalog: &[CatalogColumn],
    key_names: &[String],
    create_target: bool,
) -> Result<Vec<CatalogColumn>, CopyError> {
    let (source, target) = (sides.source, sides.target);
    let mut target_columns = read_columns(sides.target_pool, target).await?;
    if target_columns.is_empty() && create_target {
        if sides.same_database {
            create_like(sides.target_pool, source, target).await?;
        } else {
            create_from_catalogue(
                sides.source_pool,
                sides.target_pool,
                target,
                catalog,
                key_names,
            )
            .await?;
        }
        target_columns = read_columns(sides.target_pool, target).await?;
    }
    if target_columns.is_empty() {
        return Err(CopyError::Plan(format!(
            "target table {target} does not exist; create it with the same columns and primary key as {source}, or pass --create-target"
        )));
    }
    Ok(target_columns)
}

/// The target has the source's columns (names, types, collations, order) and primary key, so
/// a row and its key mean the same on both sides; across databases, each enum the columns use
/// has on the target every label it has on the source.
async fn check_target_matches(
    sides: &Sides<'_>,
    target_columns: &[CatalogColumn],
    catalog: &[CatalogColumn],
    key_names: &[String],
) -> Result<(), CopyError> {
    let (source, target) = (sides.source, sides.target);
    let differing = catalog
        .iter()
        .zip(target_columns)
        .find(|(s, t)| s.column != t.column)
        .map(|(s, t)| {
            format!(
                "; first difference: {} {} on the source, {} {} on the target",
                s.column.name, s.column.ty, t.column.name, t.column.ty
            )
        });
    if target_columns.len() != catalog.len() || differing.is_some() {
        return Err(CopyError::Plan(format!(
            "target table {target} does not have the same columns (names, types, collations, order) as {source}{}",
            differing.unwrap_or_default()
        )));
    }
    if primary_key(sides.target_pool, target).await? != key_names {
        return Err(CopyError::Plan(format!(
            "target table {target} does not have the same primary key as {source} ({})",
            key_names.join(", ")
        )));
    }
    if !sides.same_database {
        check_enum_labels(sides, catalog).await?;
    }
    Ok(())
}

/// Every value an enum column holds on the source must be one the target's enum accepts.
async fn check_enum_labels(sides: &Sides<'_>, catalog: &[CatalogColumn]) -> Result<(), CopyError> {
    for c in catalog {
        let Some(user) = c
            .user_type
            .as_ref()
            .filter(|u| u.kind == UserTypeKind::Enum)
        else {
            continue;
        };
        let theirs = enum_labels(sides.target_pool, &user.qualified).await?;
        let missing: Vec<String> = enum_labels(sides.source_pool, &user.qualified)
            .await?
            .into_iter()
            .filter(|label| !theirs.contains(label))
            .collect();
        if !missing.is_empty() {
            return Err(CopyError::Plan(format!(
                "column {} of {}: the target's enum {} lacks the label(s) {}; add them there (ALTER TYPE … ADD VALUE) first",
                c.column.name,
                sides.source,
                user.qualified,
                missing.join(", ")
            )));
        }
    }
    Ok(())
}
