//! `raw_sql`: statements Ferry does not model, run inside `start`'s transaction, with their
//! explicit `down` run by `rollback`. Use it for what the other operations do not cover
//! (functions, grants, comments); it must not change what the old version relies on.

use crate::error::PlanError;
use crate::plan::Collected;

pub(super) fn resolve(i: usize, up: &str, down: &str, c: &mut Collected) -> Result<(), PlanError> {
    for (field, sql) in [("up", up), ("down", down)] {
        if sql.trim().is_empty() {
            return Err(PlanError::at(
                i,
                field,
                "is empty: raw_sql needs both `up` and `down`, so it can be rolled back",
            ));
        }
    }
    c.expand.push(up.to_owned());
    c.rollback.push((vec![down.to_owned()], Vec::new()));
    Ok(())
}
