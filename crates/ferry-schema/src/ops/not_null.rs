//! `set_not_null` and `drop_not_null`. The old version may still write NULLs while the new
//! one may not (or the other way round), so the column is rewritten beside itself
//! ([`super::duplicate`]): `up` gives existing NULLs a value, `down` gives the old version a
//! value for the new version's NULLs.

use super::duplicate::{self, NewColumn};
use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::names::quote;
use crate::plan::virtual_schema::VSchema;

pub(super) fn set(
    i: usize,
    table: &str,
    column: &str,
    up: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    let col = vs
        .table(i, "table", table)?
        .column(i, "column", column)?
        .clone();
    if col.not_null {
        return Err(PlanError::at(
            i,
            "column",
            format!("column {column:?} is already NOT NULL"),
        ));
    }
    let identity = quote(column);
    duplicate::resolve(
        i,
        table,
        column,
        NewColumn {
            ty: &col.ty,
            not_null: true,
            up,
            down: &identity,
            default: None,
        },
        vs,
        c,
    )
}

pub(super) fn drop(
    i: usize,
    table: &str,
    column: &str,
    down: &str,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    let col = vs
        .table(i, "table", table)?
        .column(i, "column", column)?
        .clone();
    if !col.not_null {
        return Err(PlanError::at(
            i,
            "column",
            format!("column {column:?} is not NOT NULL"),
        ));
    }
    let identity = quote(&col.physical);
    duplicate::resolve(
        i,
        table,
        column,
        NewColumn {
            ty: &col.ty,
            not_null: false,
            up: &identity,
            down,
            default: None,
        },
        vs,
        c,
    )
}
