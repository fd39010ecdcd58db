//! A column rewritten beside itself: the shared machinery of `change_type`, `set_not_null`
//! and `drop_not_null`. The new values live in `_ferry_new_<column>` (the new version sees it
//! under the column's name), triggers keep both in step through `up` and `down`, the backfill
//! fills history, and `complete` drops the old column and renames the new one into its place.

use crate::error::PlanError;
use crate::plan::names::{self, MAX_NAME, NEW_PREFIX, quote};
use crate::plan::virtual_schema::VSchema;
use crate::plan::{Collected, Direction, Step, SyncRule};

/// The new shape of the column.
pub(super) struct NewColumn<'a> {
    pub ty: &'a str,
    pub not_null: bool,
    pub up: &'a str,
    pub down: &'a str,
    /// A default given in the new type; without it the old one carries over only where the
    /// type does not change.
    pub default: Option<&'a str>,
}

/// `_ferry_nn_<column>`: the `NOT VALID` check that stands for NOT NULL until `complete`.
pub(super) fn not_null_check(column: &str) -> String {
    format!("_ferry_nn_{column}")
}

pub(super) fn resolve(
    i: usize,
    table: &str,
    column: &str,
    new: NewColumn<'_>,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    names::check_expression(i, "up", new.up)?;
    names::check_expression(i, "down", new.down)?;
    let schema = vs.schema.clone();
    let t = vs.table_mut(i, "table", table)?;
    let col = t.column(i, "column", column)?.clone();
    if !col.existed {
        return Err(PlanError::at(
            i,
            "column",
            format!("column {column:?} is added by this plan: give it its final shape there"),
        ));
    }
    if t.primary_key.contains(&col.physical) {
        return Err(PlanError::at(
            i,
            "column",
            format!(
                "column {column:?} is part of the primary key of {table:?}, which cannot be rewritten beside itself"
            ),
        ));
    }
    let dup = format!("{NEW_PREFIX}{}", col.physical);
    if dup.len() > MAX_NAME || not_null_check(&col.physical).len() > MAX_NAME {
        return Err(PlanError::at(
            i,
            "column",
            format!(
                "{column:?} is too long to be rewritten: {dup:?} would exceed {MAX_NAME} bytes"
            ),
        ));
    }
    t.claim(i, "column", column)?;
    let qt = names::qualified(&schema, &t.physical);
    let check = not_null_check(&col.physical);
    c.expand.push(format!(
        "ALTER TABLE {qt} ADD COLUMN {} {}",
        quote(&dup),
        new.ty
    ));
    // The default carries over where the type does not change. Set apart from ADD COLUMN
    // so existing rows stay NULL until backfilled (a NULL is how `complete` tells).
    let default = new
        .default
        .map(str::to_owned)
        .or_else(|| col.default.clone().filter(|_| new.ty == col.ty));
    if let Some(d) = &default {
        c.expand.push(format!(
            "ALTER TABLE {qt} ALTER COLUMN {} SET DEFAULT {d}",
            quote(&dup)
        ));
    }
    if new.not_null {
        c.expand.push(format!(
            "ALTER TABLE {qt} ADD CONSTRAINT {} CHECK ({} IS NOT NULL) NOT VALID",
            quote(&check),
            quote(&dup)
        ));
        c.complete_before.push(Step::transaction(
            format!("validate {}.{column} not null", t.name),
            vec![format!(
                "ALTER TABLE {qt} VALIDATE CONSTRAINT {}",
                quote(&check)
            )],
        ));
    }
    c.sync.push(SyncRule {
        table: t.physical.clone(),
        column: dup.clone(),
        expression: new.up.to_owned(),
        direction: Direction::Up,
    });
    c.sync.push(SyncRule {
        table: t.physical.clone(),
        column: col.physical.clone(),
        expression: new.down.to_owned(),
        direction: Direction::Down,
    });
    c.backfills
        .push((t.physical.clone(), dup.clone(), new.up.to_owned()));
    c.contract.push(format!(
        "ALTER TABLE {qt} DROP COLUMN {}",
        quote(&col.physical)
    ));
    c.contract.push(format!(
        "ALTER TABLE {qt} RENAME COLUMN {} TO {}",
        quote(&dup),
        quote(&col.physical)
    ));
    if new.not_null {
        c.contract.push(format!(
            "ALTER TABLE {qt} ALTER COLUMN {} SET NOT NULL",
            quote(&col.physical)
        ));
        c.contract.push(format!(
            "ALTER TABLE {qt} DROP CONSTRAINT {}",
            quote(&check)
        ));
    }
    c.rollback.push((
        vec![format!(
            "ALTER TABLE {qt} DROP COLUMN IF EXISTS {}",
            quote(&dup)
        )],
        Vec::new(),
    ));
    let vcol = t.column_mut(i, "column", column)?;
    vcol.physical = dup;
    vcol.ty = new.ty.to_owned();
    vcol.not_null = new.not_null;
    vcol.has_default = default.is_some();
    vcol.default = default;
    Ok(())
}
