//! `add_check`: added `NOT VALID` during `start` (new writes of both versions are checked
//! from then on; existing rows are not scanned under a lock), validated at `complete` under a
//! lock that lets writers through. The expression names columns as the table holds them.

use crate::error::PlanError;
use crate::plan::names::{self, quote};
use crate::plan::virtual_schema::VSchema;
use crate::plan::{Collected, Step};

pub(super) fn resolve(
    i: usize,
    table: &str,
    name: &str,
    check: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    names::check_expression(i, "check", check)?;
    let t = vs.table(i, "table", table)?;
    super::check_new_constraint_name(i, "name", name, t, &vs.catalogue)?;
    let qt = vs.qualified(t);
    c.expand.push(format!(
        "ALTER TABLE {qt} ADD CONSTRAINT {} CHECK ({check}) NOT VALID",
        quote(name)
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
