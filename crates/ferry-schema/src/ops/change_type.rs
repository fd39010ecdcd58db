//! `change_type`: a column's type changes; `up` converts old values, `down` converts back
//! for the old version. Built on [`super::duplicate`].

use super::duplicate::{self, NewColumn};
use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::virtual_schema::VSchema;

/// The column's new type, its conversions both ways and its new default.
pub(super) struct To<'a> {
    pub ty: &'a str,
    pub up: &'a str,
    pub down: &'a str,
    pub default: Option<&'a str>,
}

pub(super) fn resolve(
    i: usize,
    table: &str,
    column: &str,
    to: To<'_>,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    let To {
        ty,
        up,
        down,
        default,
    } = to;
    super::check_type(i, "type", ty)?;
    if let Some(d) = default {
        crate::plan::names::check_expression(i, "default", d)?;
    }
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
            default,
        },
        vs,
        c,
    )
}
