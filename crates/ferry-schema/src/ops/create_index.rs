//! `create_index`: built `CONCURRENTLY` during `start` (writers are never blocked); an
//! interrupted build's invalid index is dropped and built again on the next run.

use crate::error::PlanError;
use crate::plan::Collected;
use crate::plan::names::quote;
use crate::plan::virtual_schema::VSchema;

const METHODS: &[&str] = &["btree", "hash", "gin", "gist", "brin", "spgist"];

#[allow(clippy::too_many_arguments)]
pub(super) fn resolve(
    i: usize,
    table: &str,
    name: &str,
    columns: &[String],
    unique: bool,
    method: Option<&str>,
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    super::check_new_index_name(i, "name", name, vs)?;
    let method = method.unwrap_or("btree");
    if !METHODS.contains(&method) {
        return Err(PlanError::at(
            i,
            "method",
            format!("{method:?} is not one of: {}", METHODS.join(", ")),
        ));
    }
    let t = vs.table(i, "table", table)?;
    let cols = super::physical_columns(i, "columns", t, columns)?;
    let qt = vs.qualified(t);
    let schema = vs.schema.clone();
    c.expand_after.push(super::build_index_step(
        format!("build index {name}"),
        &schema,
        name,
        format!(
            "CREATE {}INDEX CONCURRENTLY IF NOT EXISTS {} ON {qt} USING {method} ({})",
            if unique { "UNIQUE " } else { "" },
            quote(name),
            super::column_list(&cols)
        ),
    ));
    c.rollback.push((
        Vec::new(),
        vec![super::drop_index_step(
            format!("drop index {name}"),
            &schema,
            name,
        )],
    ));
    vs.indexes.push(name.to_owned());
    Ok(())
}
