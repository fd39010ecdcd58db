//! `add_unique`: a unique index built concurrently during `start` (both versions' writes are
//! held to it from then on), attached as a constraint at `complete` without a scan.

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::names::quote;
use crate::plan::virtual_schema::VSchema;

pub(super) fn resolve(
    i: usize,
    table: &str,
    name: &str,
    columns: &[String],
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    super::check_new_index_name(i, "name", name, vs)?;
    let t = vs.table(i, "table", table)?;
    super::check_new_constraint_name(i, "name", name, t, &vs.catalogue)?;
    let cols = super::physical_columns(i, "columns", t, columns)?;
    let qt = vs.qualified(t);
    let schema = vs.schema.clone();
    c.expand_after.push(super::build_index_step(
        format!("build unique index {name}"),
        &schema,
        name,
        format!(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {} ON {qt} ({})",
            quote(name),
            super::column_list(&cols)
        ),
    ));
    c.contract.push(format!(
        "ALTER TABLE {qt} ADD CONSTRAINT {0} UNIQUE USING INDEX {0}",
        quote(name)
    ));
    c.rollback.push((
        Vec::new(),
        vec![super::drop_index_step(
            format!("drop index {name}"),
            &schema,
            name,
        )],
    ));
    vs.indexes.push(name.to_owned());
    vs.table_mut(i, "table", table)?
        .constraints
        .push(name.to_owned());
    Ok(())
}
