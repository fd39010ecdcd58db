//! `rename_column`: the new version's view shows the column under its new name; `complete`
//! renames it. Nothing physical changes before then.

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::names::{self, quote};
use crate::plan::virtual_schema::VSchema;

pub(super) fn resolve(
    i: usize,
    table: &str,
    from: &str,
    to: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    names::check(i, "to", to, &vs.catalogue)?;
    let schema = vs.schema.clone();
    let t = vs.table_mut(i, "table", table)?;
    t.column(i, "from", from)?;
    t.free_column(i, "to", to)?;
    t.claim(i, "from", from)?;
    let qt = names::qualified(&schema, &t.physical);
    let col = t.column_mut(i, "from", from)?;
    c.contract.push(format!(
        "ALTER TABLE {qt} RENAME COLUMN {} TO {}",
        quote(&col.physical),
        quote(to)
    ));
    c.rollback.push((Vec::new(), Vec::new()));
    col.name = to.to_owned();
    Ok(())
}
