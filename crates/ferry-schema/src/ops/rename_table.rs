//! `rename_table`: the new version's view takes the new name; `complete` renames the table
//! after every other contract statement (which name it physically).

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::names::{self, quote};
use crate::plan::virtual_schema::VSchema;

pub(super) fn resolve(
    i: usize,
    from: &str,
    to: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    names::check(i, "to", to, &vs.catalogue)?;
    vs.free_relation(i, "to", to)?;
    let t = vs.table(i, "from", from)?;
    c.contract_last.push(format!(
        "ALTER TABLE {} RENAME TO {}",
        vs.qualified(t),
        quote(to)
    ));
    c.rollback.push((Vec::new(), Vec::new()));
    vs.table_mut(i, "from", from)?.name = to.to_owned();
    Ok(())
}
