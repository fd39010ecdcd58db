//! `add_foreign_key`: added `NOT VALID` during `start`, validated at `complete` (a lock that
//! lets writers through on both tables). The referenced table must exist.

use crate::error::PlanError;
use crate::plan::names::quote;
use crate::plan::virtual_schema::VSchema;
use crate::plan::{Collected, Reference, Step};

pub(super) fn resolve(
    i: usize,
    table: &str,
    name: &str,
    columns: &[String],
    references: &Reference,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    let t = vs.table(i, "table", table)?;
    super::check_new_constraint_name(i, "name", name, t, &vs.catalogue)?;
    let cols = super::physical_columns(i, "columns", t, columns)?;
    let qt = vs.qualified(t);
    let target = vs.table(i, "references.table", &references.table)?;
    let target_cols =
        super::physical_columns(i, "references.columns", target, &references.columns)?;
    if target_cols.len() != cols.len() {
        return Err(PlanError::at(
            i,
            "references.columns",
            format!(
                "names {} column(s) for {} in columns",
                target_cols.len(),
                cols.len()
            ),
        ));
    }
    let on_delete = super::add_column::on_delete_clause(i, references.on_delete.as_deref())?;
    c.expand.push(format!(
        "ALTER TABLE {qt} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} ({}){on_delete} NOT VALID",
        quote(name),
        super::column_list(&cols),
        vs.qualified(target),
        super::column_list(&target_cols)
    ));
    c.complete_before.push(Step::transaction(
        format!("validate {name}"),
        vec![format!(
            "ALTER TABLE {qt} VALIDATE CONSTRAINT {}",
            quote(name)
        )],
    ));
    c.rollback.push((
        vec![format!(
            "ALTER TABLE {qt} DROP CONSTRAINT IF EXISTS {}",
            quote(name)
        )],
        Vec::new(),
    ));
    vs.table_mut(i, "table", table)?
        .constraints
        .push(name.to_owned());
    Ok(())
}
