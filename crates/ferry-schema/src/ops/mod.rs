//! The operations: each module resolves one kind against the virtual schema, refusing what
//! cannot be done and adding its expand, complete and rollback statements to the plan.
//!
//! An operation never changes what the old version sees until `complete`: whatever the new
//! version needs is built beside the old shape (a column holding the new values, a
//! constraint `NOT VALID`, an index built concurrently), and the version schema's views
//! show it under its new name.

mod add_check;
mod add_column;
mod add_enum_value;
mod add_foreign_key;
mod add_unique;
mod change_type;
mod create_enum;
mod create_index;
mod create_table;
mod defaults;
mod drop_column;
mod drop_constraint;
mod drop_index;
mod drop_table;
mod duplicate;
mod not_null;
mod raw_sql;
mod rename_column;
mod rename_table;

use crate::error::PlanError;
use crate::plan::virtual_schema::VSchema;
use crate::plan::{Collected, Operation};

pub(crate) fn resolve(
    i: usize,
    op: &Operation,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    match op {
        Operation::CreateTable {
            table,
            columns,
            primary_key,
        } => create_table::resolve(i, table, columns, primary_key, vs, c),
        Operation::DropTable { table } => drop_table::resolve(i, table, vs, c),
        Operation::RenameTable { from, to } => rename_table::resolve(i, from, to, vs, c),
        Operation::AddColumn { table, column, up } => {
            add_column::resolve(i, table, column, up.as_deref(), vs, c)
        }
        Operation::DropColumn {
            table,
            column,
            down,
        } => drop_column::resolve(i, table, column, down.as_deref(), vs, c),
        Operation::RenameColumn { table, from, to } => {
            rename_column::resolve(i, table, from, to, vs, c)
        }
        Operation::ChangeType {
            table,
            column,
            ty,
            up,
            down,
            default,
        } => change_type::resolve(
            i,
            table,
            column,
            change_type::To {
                ty,
                up,
                down,
                default: default.as_deref(),
            },
            vs,
            c,
        ),
        Operation::SetNotNull { table, column, up } => not_null::set(i, table, column, up, vs, c),
        Operation::DropNotNull {
            table,
            column,
            down,
        } => not_null::drop(i, table, column, down, vs, c),
        Operation::SetDefault {
            table,
            column,
            default,
        } => defaults::set(i, table, column, default, vs, c),
        Operation::DropDefault { table, column } => defaults::drop(i, table, column, vs, c),
        Operation::AddUnique {
            table,
            name,
            columns,
        } => add_unique::resolve(i, table, name, columns, vs, c),
        Operation::AddCheck { table, name, check } => {
            add_check::resolve(i, table, name, check, vs, c)
        }
        Operation::AddForeignKey {
            table,
            name,
            columns,
            references,
        } => add_foreign_key::resolve(i, table, name, columns, references, vs, c),
        Operation::DropConstraint { table, name } => {
            drop_constraint::resolve(i, table, name, vs, c)
        }
        Operation::CreateIndex {
            table,
            name,
            columns,
            unique,
            method,
        } => create_index::resolve(i, table, name, columns, *unique, method.as_deref(), vs, c),
        Operation::DropIndex { name } => drop_index::resolve(i, name, vs, c),
        Operation::CreateEnum { name, values } => create_enum::resolve(i, name, values, vs, c),
        Operation::AddEnumValue { ty, value } => add_enum_value::resolve(i, ty, value, vs, c),
        Operation::RawSql { up, down } => raw_sql::resolve(i, up, down, c),
    }
}

/// A column type from the plan, spliced into DDL: refused unless it is made of the
/// characters type names use (`numeric(12,2)`, `timestamp with time zone`, `"app"."status"[]`).
pub(crate) fn check_type(i: usize, field: &str, ty: &str) -> Result<(), PlanError> {
    let ok = !ty.trim().is_empty()
        && ty.len() <= 200
        && ty
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _(),.[]\"".contains(c));
    if ok {
        Ok(())
    } else {
        Err(PlanError::at(
            i,
            field,
            format!(
                "{ty:?} is not a type name (letters, digits, spaces, '_', '(', ')', ',', '.', '[', ']', '\"')"
            ),
        ))
    }
}

/// The physical columns of `table` named by the new version's `names`, each checked.
pub(crate) fn physical_columns(
    i: usize,
    field: &str,
    table: &crate::plan::virtual_schema::VTable,
    names: &[String],
) -> Result<Vec<String>, PlanError> {
    if names.is_empty() {
        return Err(PlanError::at(
            i,
            field,
            "is empty: name at least one column",
        ));
    }
    names
        .iter()
        .map(|n| table.column(i, field, n).map(|c| c.physical.clone()))
        .collect()
}

/// `"a", "b"`.
pub(crate) fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| crate::plan::names::quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A relation name (index, constraint) the plan creates: valid, and free.
pub(crate) fn check_new_index_name(
    i: usize,
    field: &str,
    name: &str,
    vs: &VSchema,
) -> Result<(), PlanError> {
    crate::plan::names::check(i, field, name, &vs.catalogue)?;
    vs.free_relation(i, field, name)
}

/// A constraint name the plan creates on `table`: valid, and free on the table.
pub(crate) fn check_new_constraint_name(
    i: usize,
    field: &str,
    name: &str,
    table: &crate::plan::virtual_schema::VTable,
    catalogue: &crate::catalogue::Catalogue,
) -> Result<(), PlanError> {
    crate::plan::names::check(i, field, name, catalogue)?;
    if table.constraints.iter().any(|c| c == name) {
        return Err(PlanError::at(
            i,
            field,
            format!("table {:?} already has a constraint {name:?}", table.name),
        ));
    }
    Ok(())
}

/// `CREATE [UNIQUE] INDEX CONCURRENTLY` as an idempotent step: an index left invalid by an
/// interrupted build is dropped first, then built again.
pub(crate) fn build_index_step(
    label: String,
    schema: &str,
    name: &str,
    create: String,
) -> crate::plan::Step {
    let q = crate::plan::names::qualified(schema, name);
    let drop_invalid = format!(
        "DO $ferry$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = {} AND c.relname = {} \
         AND NOT i.indisvalid) THEN EXECUTE 'DROP INDEX {}'; END IF; END $ferry$",
        crate::plan::names::literal(schema),
        crate::plan::names::literal(name),
        q.replace('\'', "''"),
    );
    crate::plan::Step::concurrent(label, vec![drop_invalid, create])
}

/// `DROP INDEX CONCURRENTLY IF EXISTS`.
pub(crate) fn drop_index_step(label: String, schema: &str, name: &str) -> crate::plan::Step {
    crate::plan::Step::concurrent(
        label,
        vec![format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {}",
            crate::plan::names::qualified(schema, name)
        )],
    )
}
