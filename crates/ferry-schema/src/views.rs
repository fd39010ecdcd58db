//! The version schema: `<schema>_<migration>`, one view per table showing the new shape
//! (new names, new columns, dropped ones gone, new defaults). An application picks the new
//! version with `SET search_path TO <schema>_<migration>, <schema>`; views over one table
//! are updatable, so it inserts, updates and deletes through them. `complete` drops the
//! schema: the table then has the new shape itself, and PostgreSQL skips a schema in
//! `search_path` that does not exist, so such an application keeps working unchanged.

use crate::plan::Settings;
use crate::plan::names::{qualified, quote};
use crate::plan::virtual_schema::VSchema;

pub(crate) struct ViewStatements {
    pub create: Vec<String>,
    pub drop: Vec<String>,
}

pub(crate) fn statements(
    settings: &Settings,
    version_schema: &str,
    vs: &VSchema,
    defaults: &[(String, String, String)],
) -> ViewStatements {
    let qvs = quote(version_schema);
    let mut create = vec![format!("CREATE SCHEMA {qvs}")];
    for t in vs.tables.iter().filter(|t| !t.dropped) {
        let columns = t
            .columns
            .iter()
            .map(|c| format!("{} AS {}", quote(&c.physical), quote(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let view = qualified(version_schema, &t.name);
        create.push(format!(
            "CREATE VIEW {view} AS SELECT {columns} FROM {}",
            qualified(&settings.schema, &t.physical)
        ));
        for (table, column, default) in defaults.iter().filter(|d| d.0 == t.physical) {
            if let Some(c) = t.columns.iter().find(|c| &c.physical == column) {
                let _ = table;
                create.push(format!(
                    "ALTER VIEW {view} ALTER COLUMN {} SET DEFAULT {default}",
                    quote(&c.name)
                ));
            }
        }
    }
    ViewStatements {
        create,
        drop: vec![format!("DROP SCHEMA IF EXISTS {qvs} CASCADE")],
    }
}
