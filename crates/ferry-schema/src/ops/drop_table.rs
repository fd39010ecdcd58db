//! `drop_table`: the new version's schema no longer shows it; `complete` drops it (without
//! CASCADE: a view or foreign key of the application's that still needs it stops the
//! contract, and nothing of theirs is dropped behind their back).

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::virtual_schema::VSchema;

pub(super) fn resolve(
    i: usize,
    table: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    let t = vs.table(i, "table", table)?;
    if let Some(first) = t.columns.iter().find_map(|col| col.changed_by) {
        return Err(PlanError::at(
            i,
            "table",
            format!("conflicts with operations[{first}], which changes table {table:?}"),
        ));
    }
    c.contract
        .push(format!("DROP TABLE IF EXISTS {}", vs.qualified(t)));
    c.rollback.push((Vec::new(), Vec::new()));
    vs.table_mut(i, "table", table)?.dropped = true;
    Ok(())
}
