//! The schema as the operations so far left it: what each table and column is called in the
//! new version, and which physical table and column hold it. Resolving a plan applies each
//! operation here, in order; the views and triggers are derived from the result.

use crate::catalogue::Catalogue;
use crate::error::PlanError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VColumn {
    /// Its name in the new version.
    pub name: String,
    pub physical: String,
    pub ty: String,
    pub not_null: bool,
    pub has_default: bool,
    /// The table's default for it, as `pg_get_expr` printed it (columns that existed).
    pub default: Option<String>,
    /// Whether it existed before the plan (the old version sees it under `physical`).
    pub existed: bool,
    /// The operation that added or changed it, if any: one change per column per plan.
    pub changed_by: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VTable {
    /// Its name in the new version.
    pub name: String,
    pub physical: String,
    pub columns: Vec<VColumn>,
    /// Physical names.
    pub primary_key: Vec<String>,
    pub existed: bool,
    pub dropped: bool,
    pub constraints: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VSchema {
    pub schema: String,
    pub tables: Vec<VTable>,
    pub indexes: Vec<String>,
    pub types: Vec<String>,
    pub catalogue: Catalogue,
}

impl VSchema {
    pub fn from_catalogue(catalogue: &Catalogue) -> VSchema {
        VSchema {
            schema: catalogue.schema.clone(),
            tables: catalogue
                .tables
                .iter()
                .map(|t| VTable {
                    name: t.name.clone(),
                    physical: t.name.clone(),
                    columns: t
                        .columns
                        .iter()
                        .map(|c| VColumn {
                            name: c.name.clone(),
                            physical: c.name.clone(),
                            ty: c.ty.clone(),
                            not_null: c.not_null,
                            has_default: c.has_default,
                            default: c.default.clone(),
                            existed: true,
                            changed_by: None,
                        })
                        .collect(),
                    primary_key: t.primary_key.clone(),
                    existed: true,
                    dropped: false,
                    constraints: catalogue
                        .constraints
                        .get(&t.name)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default(),
                })
                .collect(),
            indexes: catalogue.indexes.iter().cloned().collect(),
            types: catalogue.types.iter().cloned().collect(),
            catalogue: catalogue.clone(),
        }
    }

    /// The live table called `name` in the new version.
    pub fn table(&self, i: usize, field: &str, name: &str) -> Result<&VTable, PlanError> {
        self.tables
            .iter()
            .find(|t| t.name == name && !t.dropped)
            .ok_or_else(|| self.no_table(i, field, name))
    }

    pub fn table_mut(
        &mut self,
        i: usize,
        field: &str,
        name: &str,
    ) -> Result<&mut VTable, PlanError> {
        let missing = self.no_table(i, field, name);
        self.tables
            .iter_mut()
            .find(|t| t.name == name && !t.dropped)
            .ok_or(missing)
    }

    fn no_table(&self, i: usize, field: &str, name: &str) -> PlanError {
        PlanError::at(
            i,
            field,
            format!("table {name:?} does not exist in schema {:?}", self.schema),
        )
    }

    /// Refuses a table name that is taken (by a table, or by an index, whose names share
    /// PostgreSQL's relation namespace).
    pub fn free_relation(&self, i: usize, field: &str, name: &str) -> Result<(), PlanError> {
        if self
            .tables
            .iter()
            .any(|t| (t.name == name || t.physical == name) && !t.dropped)
            || self.indexes.iter().any(|x| x == name)
            || self.catalogue.table(name).is_some()
        {
            return Err(PlanError::at(
                i,
                field,
                format!("{name:?} is taken in schema {:?}", self.schema),
            ));
        }
        Ok(())
    }

    /// The physical name of a table as it was before the plan, or the new table's.
    pub fn qualified(&self, table: &VTable) -> String {
        super::names::qualified(&self.schema, &table.physical)
    }
}

impl VTable {
    pub fn column(&self, i: usize, field: &str, name: &str) -> Result<&VColumn, PlanError> {
        self.columns
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| self.no_column(i, field, name))
    }

    pub fn column_mut(
        &mut self,
        i: usize,
        field: &str,
        name: &str,
    ) -> Result<&mut VColumn, PlanError> {
        let missing = self.no_column(i, field, name);
        self.columns
            .iter_mut()
            .find(|c| c.name == name)
            .ok_or(missing)
    }

    fn no_column(&self, i: usize, field: &str, name: &str) -> PlanError {
        PlanError::at(
            i,
            field,
            format!("column {name:?} does not exist in table {:?}", self.name),
        )
    }

    /// Refuses a column name the table has, under either version's name.
    pub fn free_column(&self, i: usize, field: &str, name: &str) -> Result<(), PlanError> {
        if self
            .columns
            .iter()
            .any(|c| c.name == name || c.physical == name)
        {
            return Err(PlanError::at(
                i,
                field,
                format!("table {:?} already has a column {name:?}", self.name),
            ));
        }
        Ok(())
    }

    /// A column may be changed once per plan (its `up`/`down` would otherwise refer to a
    /// shape that exists nowhere): a second change is a conflict naming the first.
    pub fn claim(&mut self, i: usize, field: &str, name: &str) -> Result<(), PlanError> {
        let column = self.column_mut(i, field, name)?;
        if let Some(first) = column.changed_by {
            return Err(PlanError::at(
                i,
                field,
                format!(
                    "conflicts with operations[{first}], which already changes column {name:?}: split them into two migrations"
                ),
            ));
        }
        column.changed_by = Some(i);
        Ok(())
    }
}
