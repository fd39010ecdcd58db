//! `change_type`: a column's type changes; `up` converts old values, `down` converts back
//! for the old version. Built on [`super::duplicate`].

use super::duplicate::{self, NewColumn};
use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::virtual_schema::VSchema;

#[allow(clippy::too_many_arguments)]
pub(super) fn resolve(
    i: usize,
    table: &str,
    column: &str,
    ty: &str,
    up: &str,
    down: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    super::check_type(i, "type", ty)?;
    let not_null = vs
        .table(i, "table", table)?
        .column(i, "column", column)?
        .not_null;
    duplicate::resolve(
        i,
        table,
        column,
        NewColumn {
            ty,
            not_null,
            up,
            down,
        },
        vs,
        c,
    )
}
