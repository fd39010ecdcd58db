//! `set_default` and `drop_default`: the new version's view gets the default (views have
//! column defaults of their own, used by inserts through them), so the old version keeps its
//! own until `complete` sets it on the table.

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::names::{self, quote};
use crate::plan::virtual_schema::VSchema;

pub(super) fn set(
    i: usize,
    table: &str,
    column: &str,
    default: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    names::check_expression(i, "default", default)?;
    change(i, table, column, Some(default), vs, c)
}

pub(super) fn drop(
    i: usize,
    table: &str,
    column: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    change(i, table, column, None, vs, c)
}

fn change(
    i: usize,
    table: &str,
    column: &str,
    default: Option<&str>,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    let schema = vs.schema.clone();
    let t = vs.table_mut(i, "table", table)?;
    t.claim(i, "column", column)?;
    let qt = names::qualified(&schema, &t.physical);
    let physical_table = t.physical.clone();
    let col = t.column_mut(i, "column", column)?;
    let qc = quote(&col.physical);
    c.contract.push(match default {
        Some(d) => format!("ALTER TABLE {qt} ALTER COLUMN {qc} SET DEFAULT {d}"),
        None => format!("ALTER TABLE {qt} ALTER COLUMN {qc} DROP DEFAULT"),
    });
    c.rollback.push((Vec::new(), Vec::new()));
    c.view_defaults.push((
        physical_table,
        col.physical.clone(),
        default.unwrap_or("NULL").to_owned(),
    ));
    col.has_default = default.is_some();
    Ok(())
}
