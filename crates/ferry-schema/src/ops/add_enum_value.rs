//! `add_enum_value`: added during `start`. PostgreSQL cannot remove a value from an enum, so
//! `rollback` leaves it in place (harmless: no row of the old version holds it); the plan
//! command says so.

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::names::{self, literal};
use crate::plan::virtual_schema::VSchema;

pub(super) fn resolve(
    i: usize,
    ty: &str,
    value: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    if !vs.types.iter().any(|t| t == ty) {
        return Err(PlanError::at(
            i,
            "type",
            format!("schema {:?} has no enum type {ty:?}", vs.schema),
        ));
    }
    if value.is_empty() || value.len() > names::MAX_NAME {
        return Err(PlanError::at(
            i,
            "value",
            format!("must be 1 to {} bytes", names::MAX_NAME),
        ));
    }
    c.expand.push(format!(
        "ALTER TYPE {} ADD VALUE IF NOT EXISTS {}",
        names::qualified(&vs.schema, ty),
        literal(value)
    ));
    c.rollback.push((Vec::new(), Vec::new()));
    Ok(())
}
