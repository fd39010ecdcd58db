//! `drop_constraint`: the old version keeps relying on it until `complete` drops it.

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::names::quote;
use crate::plan::virtual_schema::VSchema;

pub(super) fn resolve(
    i: usize,
    table: &str,
    name: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    let t = vs.table(i, "table", table)?;
    if !t.constraints.iter().any(|x| x == name) {
        return Err(PlanError::at(
            i,
            "name",
            format!("table {table:?} has no constraint {name:?}"),
        ));
    }
    c.contract.push(format!(
        "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
        vs.qualified(t),
        quote(name)
    ));
    c.rollback.push((Vec::new(), Vec::new()));
    vs.table_mut(i, "table", table)?
        .constraints
        .retain(|x| x != name);
    Ok(())
}
