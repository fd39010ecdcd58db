//! `add_column`: the column is added as `_ferry_new_<name>` (nullable, with its default) so
//! the old version's inserts keep working; `up` fills it for the old version's writes and
//! for history. NOT NULL stands as a `NOT VALID` check until `complete`, which validates it
//! (no long lock), renames the column and sets NOT NULL from the valid check without a scan.
//! `unique` is an index built concurrently; `references` a foreign key `NOT VALID`; `check`
//! is verified over every row before `complete` adds it.

use super::duplicate::not_null_check;
use crate::error::PlanError;
use crate::plan::names::{self, MAX_NAME, NEW_PREFIX, quote};
use crate::plan::virtual_schema::{VColumn, VSchema};
use crate::plan::{Collected, ColumnDef, Direction, Step, SyncRule};

pub(super) fn resolve(
    i: usize,
    table: &str,
    column: &ColumnDef,
    up: Option<&str>,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    names::check(i, "column.name", &column.name, &vs.catalogue)?;
    super::check_type(i, "column.type", &column.ty)?;
    if let Some(up) = up {
        names::check_expression(i, "up", up)?;
    }
    for (field, sql) in [
        ("column.default", &column.default),
        ("column.check", &column.check),
    ] {
        if let Some(sql) = sql {
            names::check_expression(i, field, sql)?;
        }
    }
    if !column.nullable && column.default.is_none() && up.is_none() {
        return Err(PlanError::at(
            i,
            "up",
            format!(
                "column {:?} is NOT NULL without a default: give `up` (its value for existing rows and the old version's writes) or `column.default`",
                column.name
            ),
        ));
    }
    let physical = format!("{NEW_PREFIX}{}", column.name);
    if physical.len() > MAX_NAME {
        return Err(PlanError::at(
            i,
            "column.name",
            format!(
                "{:?} is too long: {physical:?} would exceed {MAX_NAME} bytes",
                column.name
            ),
        ));
    }
    let schema = vs.schema.clone();
    let unique_name = format!("{table}_{}_key", column.name);
    let fk_name = format!("{table}_{}_fkey", column.name);
    let check_name = format!("{table}_{}_check", column.name);
    if column.unique {
        super::check_new_index_name(i, "column.unique", &unique_name, vs)?;
    }
    let reference = match &column.references {
        Some(r) => {
            let target = vs.table(i, "column.references.table", &r.table)?;
            let cols = super::physical_columns(i, "column.references.columns", target, &r.columns)?;
            Some((
                names::qualified(&schema, &target.physical),
                cols,
                r.on_delete.clone(),
            ))
        }
        None => None,
    };
    {
        let t = vs.table(i, "table", table)?;
        t.free_column(i, "column.name", &column.name)?;
        t.free_column(i, "column.name", &physical)?;
        if column.references.is_some() {
            super::check_new_constraint_name(i, "column.references", &fk_name, t, &vs.catalogue)?;
        }
        if column.check.is_some() {
            super::check_new_constraint_name(i, "column.check", &check_name, t, &vs.catalogue)?;
        }
    }
    let t = vs.table_mut(i, "table", table)?;
    let qt = names::qualified(&schema, &t.physical);
    let qp = quote(&physical);
    let default = column
        .default
        .as_ref()
        .map(|d| format!(" DEFAULT {d}"))
        .unwrap_or_default();
    c.expand.push(format!(
        "ALTER TABLE {qt} ADD COLUMN {qp} {}{default}",
        column.ty
    ));
    let nn = not_null_check(&column.name);
    if !column.nullable {
        c.expand.push(format!(
            "ALTER TABLE {qt} ADD CONSTRAINT {} CHECK ({qp} IS NOT NULL) NOT VALID",
            quote(&nn)
        ));
        c.complete_before.push(Step::transaction(
            format!("validate {table}.{} not null", column.name),
            vec![format!(
                "ALTER TABLE {qt} VALIDATE CONSTRAINT {}",
                quote(&nn)
            )],
        ));
    }
    if let Some((target, cols, on_delete)) = reference {
        let on_delete = on_delete_clause(i, on_delete.as_deref())?;
        c.expand.push(format!(
            "ALTER TABLE {qt} ADD CONSTRAINT {} FOREIGN KEY ({qp}) REFERENCES {target} ({}){on_delete} NOT VALID",
            quote(&fk_name),
            super::column_list(&cols)
        ));
        c.complete_before.push(Step::transaction(
            format!("validate {fk_name}"),
            vec![format!(
                "ALTER TABLE {qt} VALIDATE CONSTRAINT {}",
                quote(&fk_name)
            )],
        ));
    }
    if column.unique {
        c.expand_after.push(super::build_index_step(
            format!("build unique index {unique_name}"),
            &schema,
            &unique_name,
            format!(
                "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {qt} ({qp})",
                quote(&unique_name)
            ),
        ));
    }
    if let Some(check) = &column.check {
        c.complete_before.push(Step::check(
            format!("every row of {table} passes {check_name}"),
            format!(
                "SELECT count(*) FROM (SELECT *, {qp} AS {} FROM {qt}) AS t WHERE NOT ({check})",
                quote(&column.name)
            ),
        ));
    }
    if let Some(up) = up {
        c.sync.push(SyncRule {
            table: t.physical.clone(),
            column: physical.clone(),
            expression: up.to_owned(),
            direction: Direction::Up,
        });
        c.backfills
            .push((t.physical.clone(), physical.clone(), up.to_owned()));
    }
    let qn = quote(&column.name);
    c.contract
        .push(format!("ALTER TABLE {qt} RENAME COLUMN {qp} TO {qn}"));
    if !column.nullable {
        c.contract
            .push(format!("ALTER TABLE {qt} ALTER COLUMN {qn} SET NOT NULL"));
        c.contract
            .push(format!("ALTER TABLE {qt} DROP CONSTRAINT {}", quote(&nn)));
    }
    if column.unique {
        c.contract.push(format!(
            "ALTER TABLE {qt} ADD CONSTRAINT {0} UNIQUE USING INDEX {0}",
            quote(&unique_name)
        ));
    }
    if let Some(check) = &column.check {
        c.contract.push(format!(
            "ALTER TABLE {qt} ADD CONSTRAINT {} CHECK ({check}) NOT VALID",
            quote(&check_name)
        ));
        c.complete_after.push(Step::transaction(
            format!("validate {check_name}"),
            vec![format!(
                "ALTER TABLE {qt} VALIDATE CONSTRAINT {}",
                quote(&check_name)
            )],
        ));
    }
    c.rollback.push((
        vec![format!("ALTER TABLE {qt} DROP COLUMN IF EXISTS {qp}")],
        Vec::new(),
    ));
    t.columns.push(VColumn {
        name: column.name.clone(),
        physical,
        ty: column.ty.clone(),
        not_null: !column.nullable,
        has_default: column.default.is_some(),
        default: None,
        existed: false,
        changed_by: Some(i),
    });
    t.constraints.extend([fk_name, check_name]);
    Ok(())
}

/// ` ON DELETE …` from the plan's word for it.
pub(super) fn on_delete_clause(i: usize, on_delete: Option<&str>) -> Result<String, PlanError> {
    match on_delete.map(|s| s.to_ascii_lowercase()) {
        None => Ok(String::new()),
        Some(s) => match s.as_str() {
            "no action" | "restrict" | "cascade" | "set null" | "set default" => {
                Ok(format!(" ON DELETE {}", s.to_ascii_uppercase()))
            }
            other => Err(PlanError::at(
                i,
                "references.on_delete",
                format!(
                    "{other:?} is not one of: no action, restrict, cascade, set null, set default"
                ),
            )),
        },
    }
}
