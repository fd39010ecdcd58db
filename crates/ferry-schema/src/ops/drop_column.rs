//! `drop_column`: the new version's view no longer shows the column; `complete` drops it.
//! Until then the old version still reads it, so the new version's writes give it `down`
//! (required when the column is NOT NULL without a default).

use crate::error::PlanError;
use crate::plan::names::{self, quote};
use crate::plan::virtual_schema::VSchema;
use crate::plan::{Collected, Direction, SyncRule};

pub(super) fn resolve(
    i: usize,
    table: &str,
    column: &str,
    down: Option<&str>,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    if let Some(down) = down {
        names::check_expression(i, "down", down)?;
    }
    let schema = vs.schema.clone();
    let t = vs.table_mut(i, "table", table)?;
    let col = t.column(i, "column", column)?.clone();
    if t.primary_key.contains(&col.physical) {
        return Err(PlanError::at(
            i,
            "column",
            format!("column {column:?} is part of the primary key of {table:?}"),
        ));
    }
    if col.not_null && !col.has_default && down.is_none() {
        return Err(PlanError::at(
            i,
            "down",
            format!(
                "column {column:?} is NOT NULL without a default: the old version still reads it until complete, so give `down` (its value for rows the new version writes)"
            ),
        ));
    }
    t.claim(i, "column", column)?;
    if let Some(down) = down {
        c.sync.push(SyncRule {
            table: t.physical.clone(),
            column: col.physical.clone(),
            expression: down.to_owned(),
            direction: Direction::Down,
        });
    }
    c.contract.push(format!(
        "ALTER TABLE {} DROP COLUMN IF EXISTS {}",
        names::qualified(&schema, &t.physical),
        quote(&col.physical)
    ));
    c.rollback.push((Vec::new(), Vec::new()));
    t.columns.retain(|x| x.name != column);
    Ok(())
}
