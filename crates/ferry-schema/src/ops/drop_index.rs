//! `drop_index`: dropped `CONCURRENTLY` after `complete`'s contract, so the old version's
//! queries keep it until then.

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::virtual_schema::VSchema;

pub(super) fn resolve(
    i: usize,
    name: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    if !vs.indexes.iter().any(|x| x == name) {
        return Err(PlanError::at(
            i,
            "name",
            format!("schema {:?} has no index {name:?}", vs.schema),
        ));
    }
    c.complete_after.push(super::drop_index_step(
        format!("drop index {name}"),
        &vs.schema,
        name,
    ));
    c.rollback.push((Vec::new(), Vec::new()));
    vs.indexes.retain(|x| x != name);
    Ok(())
}
