//! `create_table`: created during `start` (the old version never names it), dropped by
//! `rollback`. Columns take the same fields as `add_column`'s.

use std::collections::BTreeSet;

use crate::error::PlanError;
use crate::plan::names::{self, quote};
use crate::plan::virtual_schema::{VColumn, VSchema, VTable};
use crate::plan::{Collected, ColumnDef};

pub(super) fn resolve(
    i: usize,
    table: &str,
    columns: &[ColumnDef],
    primary_key: &[String],
    vs: &mut VSchema,
    c: &mut Collected,
) -> Result<(), PlanError> {
    names::check(i, "table", table, &vs.catalogue)?;
    vs.free_relation(i, "table", table)?;
    if columns.is_empty() {
        return Err(PlanError::at(i, "columns", "is empty"));
    }
    let mut seen = BTreeSet::new();
    let mut defs = Vec::new();
    for (n, col) in columns.iter().enumerate() {
        let field = format!("columns[{n}]");
        names::check(i, &format!("{field}.name"), &col.name, &vs.catalogue)?;
        super::check_type(i, &format!("{field}.type"), &col.ty)?;
        if !seen.insert(col.name.clone()) {
            return Err(PlanError::at(
                i,
                format!("{field}.name"),
                format!("column {:?} is declared twice", col.name),
            ));
        }
        defs.push(column_sql(i, &field, col, vs)?);
    }
    if primary_key.is_empty() {
        return Err(PlanError::at(
            i,
            "primary_key",
            "is empty: every table Ferry manages has a primary key (its backfills walk it)",
        ));
    }
    for k in primary_key {
        if !seen.contains(k) {
            return Err(PlanError::at(
                i,
                "primary_key",
                format!("column {k:?} is not among the table's columns"),
            ));
        }
    }
    let qt = names::qualified(&vs.schema, table);
    defs.push(format!("PRIMARY KEY ({})", super::column_list(primary_key)));
    c.expand
        .push(format!("CREATE TABLE {qt} ({})", defs.join(", ")));
    c.rollback
        .push((vec![format!("DROP TABLE IF EXISTS {qt}")], Vec::new()));
    vs.tables.push(VTable {
        name: table.to_owned(),
        physical: table.to_owned(),
        columns: columns
            .iter()
            .map(|col| VColumn {
                name: col.name.clone(),
                physical: col.name.clone(),
                ty: col.ty.clone(),
                not_null: !col.nullable || primary_key.contains(&col.name),
                has_default: col.default.is_some(),
                default: None,
                existed: false,
                changed_by: Some(i),
            })
            .collect(),
        primary_key: primary_key.to_vec(),
        existed: false,
        dropped: false,
        constraints: Vec::new(),
    });
    Ok(())
}

fn column_sql(i: usize, field: &str, col: &ColumnDef, vs: &VSchema) -> Result<String, PlanError> {
    let mut sql = format!("{} {}", quote(&col.name), col.ty);
    if !col.nullable {
        sql.push_str(" NOT NULL");
    }
    if let Some(d) = &col.default {
        names::check_expression(i, &format!("{field}.default"), d)?;
        sql.push_str(&format!(" DEFAULT {d}"));
    }
    if col.unique {
        sql.push_str(" UNIQUE");
    }
    if let Some(check) = &col.check {
        names::check_expression(i, &format!("{field}.check"), check)?;
        sql.push_str(&format!(" CHECK ({check})"));
    }
    if let Some(r) = &col.references {
        let target = vs.table(i, &format!("{field}.references.table"), &r.table)?;
        let cols = super::physical_columns(
            i,
            &format!("{field}.references.columns"),
            target,
            &r.columns,
        )?;
        let on_delete = super::add_column::on_delete_clause(i, r.on_delete.as_deref())?;
        sql.push_str(&format!(
            " REFERENCES {} ({}){on_delete}",
            vs.qualified(target),
            super::column_list(&cols)
        ));
    }
    Ok(sql)
}
