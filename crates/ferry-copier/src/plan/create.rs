//! Creating a missing target table (`--create-target`).
//!
//! In the source's own database the target is `CREATE TABLE … (LIKE source INCLUDING ALL)`:
//! everything, indexes and constraints included. In another database there is nothing to be
//! LIKE, so the table is written out from the source's catalogue: its columns in order with
//! their types, collations, NOT NULLs and defaults (but for defaults drawing on a sequence,
//! which does not exist there), and its primary key; the enums and domains those columns use
//! are created first when the target lacks them. Other indexes, constraints, triggers and
//! sequences are the operator's to create. Everything happens in one transaction, so a
//! failure leaves the target database as it was.

use std::collections::BTreeSet;

use sqlx::PgPool;
use sqlx::postgres::PgConnection;

use super::Table;
use super::types::{CatalogColumn, UserType, UserTypeKind, type_exists};
use crate::error::CopyError;

/// `CREATE TABLE … (LIKE source INCLUDING ALL)`, for a target in the source's database.
pub(super) async fn create_like(
    pool: &PgPool,
    source: &Table,
    target: &Table,
) -> Result<(), CopyError> {
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
    Ok(())
}

/// Creates `target` in another database from the source's catalogue (see the module doc).
pub(super) async fn create_from_catalogue(
    source_pool: &PgPool,
    target_pool: &PgPool,
    target: &Table,
    columns: &[CatalogColumn],
    key_names: &[String],
) -> Result<(), CopyError> {
    let mut statements = vec![format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        target.schema.quoted()
    )];
    let mut done = BTreeSet::new();
    for c in columns {
        if let Some(user) = &c.user_type {
            type_statements(
                source_pool,
                target_pool,
                user,
                &c.column.name,
                &mut done,
                &mut statements,
            )
            .await?;
        }
    }
    statements.push(table_statement(target, columns, key_names));
    let mut tx = target_pool
        .begin()
        .await
        .map_err(|e| CopyError::db("create the target table", e))?;
    for sql in statements {
        run(&mut tx, sql).await?;
    }
    tx.commit()
        .await
        .map_err(|e| CopyError::db("create the target table", e))
}

async fn run(conn: &mut PgConnection, sql: String) -> Result<(), CopyError> {
    tracing::info!(%sql, "creating the target");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map_err(|e| CopyError::db("create the target table", e))?;
    Ok(())
}

fn table_statement(target: &Table, columns: &[CatalogColumn], key_names: &[String]) -> String {
    let mut lines: Vec<String> = columns
        .iter()
        .map(|c| {
            let mut line = format!("{} {}", c.column.name.quoted(), c.column.ty);
            if let Some(collate) = &c.collate {
                line.push(' ');
                line.push_str(collate);
            }
            match &c.default {
                Some(expr) if expr.contains("nextval(") => tracing::warn!(
                    column = %c.column.name,
                    "the target is created without the column's default {expr}: its sequence is in the source database"
                ),
                Some(expr) => line.push_str(&format!(" DEFAULT {expr}")),
                None => {}
            }
            if c.not_null {
                line.push_str(" NOT NULL");
            }
            line
        })
        .collect();
    let key = key_names
        .iter()
        .map(|k| format!("\"{}\"", k.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ");
    lines.push(format!("PRIMARY KEY ({key})"));
    format!(
        "CREATE TABLE {} (\n    {}\n)",
        target.quoted(),
        lines.join(",\n    ")
    )
}

/// The statements that create `user` (and, for a domain over an enum, that enum) in the
/// target, unless it exists there already. An extension's type must already exist.
async fn type_statements(
    source: &PgPool,
    target: &PgPool,
    user: &UserType,
    column: &ferry_domain::SqlIdent,
    done: &mut BTreeSet<String>,
    statements: &mut Vec<String>,
) -> Result<(), CopyError> {
    if done.contains(&user.qualified) || type_exists(target, &user.qualified).await? {
        return Ok(());
    }
    match user.kind {
        UserTypeKind::Base => {
            return Err(CopyError::Plan(format!(
                "column {column} has type {}, which the target database does not have; install its extension there (or create the target table yourself)",
                user.qualified
            )));
        }
        UserTypeKind::Enum => {
            statements.push(format!("CREATE SCHEMA IF NOT EXISTS {}", user.schema));
            statements.push(enum_statement(source, user).await?);
        }
        UserTypeKind::Domain => {
            let (base, definition) = domain_statement(source, user).await?;
            if let Some(base) = base {
                Box::pin(type_statements(
                    source, target, &base, column, done, statements,
                ))
                .await?;
            }
            statements.push(format!("CREATE SCHEMA IF NOT EXISTS {}", user.schema));
            statements.push(definition);
        }
    }
    done.insert(user.qualified.clone());
    Ok(())
}

async fn enum_statement(source: &PgPool, user: &UserType) -> Result<String, CopyError> {
    let labels: Vec<String> = sqlx::query_scalar(
        "SELECT quote_literal(enumlabel) FROM pg_enum WHERE enumtypid = $1::bigint::oid ORDER BY enumsortorder",
    )
    .bind(user.oid)
    .fetch_all(source)
    .await
    .map_err(|e| CopyError::db("read an enum's labels", e))?;
    Ok(format!(
        "CREATE TYPE {} AS ENUM ({})",
        user.qualified,
        labels.join(", ")
    ))
}

/// A domain's definition as the catalogue holds it.
type DomainRow = (
    String,         // base type, format_type
    bool,           // NOT NULL
    Option<String>, // default
    Option<String>, // COLLATE clause when not the base type's default
    Vec<String>,    // CONSTRAINT name CHECK (…)
    Option<i64>,    // the base type's oid, when a user created it
    Option<String>, // its typtype
    String,         // the base type, quoted and qualified
    String,         // its schema, quoted
);

const DOMAIN: &str = "
SELECT format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
       CASE WHEN t.typcollation = 0 OR t.typcollation = b.typcollation THEN NULL
            ELSE (SELECT 'COLLATE ' || quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                  FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
                  WHERE co.oid = t.typcollation) END,
       ARRAY(SELECT 'CONSTRAINT ' || quote_ident(c.conname) || ' ' || pg_get_constraintdef(c.oid)
             FROM pg_constraint c WHERE c.contypid = t.oid ORDER BY c.conname),
       CASE WHEN bn.nspname <> 'pg_catalog' THEN b.oid::bigint END,
       CASE WHEN bn.nspname <> 'pg_catalog' THEN b.typtype::text END,
       quote_ident(bn.nspname) || '.' || quote_ident(b.typname),
       quote_ident(bn.nspname)
FROM pg_type t JOIN pg_type b ON b.oid = t.typbasetype
JOIN pg_namespace bn ON bn.oid = b.typnamespace
WHERE t.oid = $1::bigint::oid";

/// `CREATE DOMAIN` with the source's base type, collation, default, NOT NULL and checks; and
/// the base type when it is itself a user's enum or domain (to create first).
async fn domain_statement(
    source: &PgPool,
    user: &UserType,
) -> Result<(Option<UserType>, String), CopyError> {
    let (base, not_null, default, collate, checks, base_oid, base_kind, base_name, base_schema): DomainRow =
        sqlx::query_as(DOMAIN)
            .bind(user.oid)
            .fetch_one(source)
            .await
            .map_err(|e| CopyError::db("read a domain's definition", e))?;
    let base_user = match (base_oid, base_kind.as_deref()) {
        (Some(oid), Some(kind)) => Some(UserType {
            oid,
            kind: match kind {
                "e" => UserTypeKind::Enum,
                "d" => UserTypeKind::Domain,
                _ => UserTypeKind::Base,
            },
            qualified: base_name,
            schema: base_schema,
        }),
        _ => None,
    };
    let base = base_user.as_ref().map_or(base, |b| b.qualified.clone());
    let mut sql = format!("CREATE DOMAIN {} AS {base}", user.qualified);
    for clause in collate
        .into_iter()
        .chain(default.map(|d| format!("DEFAULT {d}")))
    {
        sql.push(' ');
        sql.push_str(&clause);
    }
    if not_null {
        sql.push_str(" NOT NULL");
    }
    for check in checks {
        sql.push(' ');
        sql.push_str(&check);
    }
    Ok((base_user, sql))
}
