//! `create_enum`: a new enum type, created during `start`, dropped by `rollback`.

use std::collections::BTreeSet;

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::names::{self, literal};
use crate::plan::virtual_schema::VSchema;

pub(super) fn resolve(
    i: usize,
    name: &str,
    values: &[String],
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    names::check(i, "name", name, &vs.catalogue)?;
    if vs.types.iter().any(|t| t == name) {
        return Err(PlanError::at(
            i,
            "name",
            format!("type {name:?} exists in schema {:?}", vs.schema),
        ));
    }
    if values.is_empty() {
        return Err(PlanError::at(i, "values", "is empty"));
    }
    let mut seen = BTreeSet::new();
    for v in values {
        if v.is_empty() || v.len() > names::MAX_NAME || !seen.insert(v) {
            return Err(PlanError::at(
                i,
                "values",
                format!(
                    "{v:?} is empty, over {} bytes, or repeated",
                    names::MAX_NAME
                ),
            ));
        }
    }
    let qn = names::qualified(&vs.schema, name);
    c.expand.push(format!(
        "CREATE TYPE {qn} AS ENUM ({})",
        values
            .iter()
            .map(|v| literal(v))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    c.rollback
        .push((vec![format!("DROP TYPE IF EXISTS {qn}")], Vec::new()));
    vs.types.push(name.to_owned());
    Ok(())
}
