//! The triggers that keep the old and the new shape in step while both versions write.
//!
//! One `BEFORE INSERT OR UPDATE` trigger per changed table. A write made through the version
//! schema (it comes before the base schema in the writer's `search_path`) computes the old shape's columns from
//! `down`; any other write computes the new columns from `up`. Each expression sees the row
//! as plain variables named as in its own version, so `up` is written against the table as
//! it was and `down` against the new version's names. The backfill sets `ferry.backfill` to
//! the migration for its own transaction and writes `up` itself, so the trigger skips it.

use ferry_domain::MigrationId;

use crate::plan::names::{literal, qualified, quote};
use crate::plan::virtual_schema::{VSchema, VTable};
use crate::plan::{Direction, Settings, SyncRule};

/// The schema holding Ferry's functions and bookkeeping in the application's database.
pub const FERRY_SCHEMA: &str = "ferry_schema";

pub(crate) struct SyncStatements {
    pub create: Vec<String>,
    pub drop: Vec<String>,
}

/// The trigger's name on each table it keeps in step.
pub fn trigger_name(migration: &MigrationId) -> String {
    format!("_ferry_sync_{migration}")
}

pub(crate) fn statements(
    migration: &MigrationId,
    settings: &Settings,
    before: &VSchema,
    after: &VSchema,
    rules: &[SyncRule],
) -> SyncStatements {
    let mut tables: Vec<&str> = rules.iter().map(|r| r.table.as_str()).collect();
    tables.dedup();
    tables.sort();
    tables.dedup();
    let version_schema = format!("{}_{}", settings.schema, migration);
    let (mut create, mut drop) = (Vec::new(), Vec::new());
    for (n, table) in tables.into_iter().enumerate() {
        let function = qualified(FERRY_SCHEMA, &format!("s_{migration}_{n}"));
        let qt = qualified(&settings.schema, table);
        let old = before.tables.iter().find(|t| t.physical == table);
        let new = after.tables.iter().find(|t| t.physical == table);
        let mine: Vec<&SyncRule> = rules.iter().filter(|r| r.table == table).collect();
        let body = format!(
            "BEGIN\n  IF {FERRY_SCHEMA}.is_version({}, {}) THEN\n{}\n  ELSE\n{}\n  END IF;\n  RETURN NEW;\nEND",
            literal(&version_schema),
            literal(&settings.schema),
            branch(&qt, new, &mine, Direction::Down, true),
            branch(&qt, old, &mine, Direction::Up, false),
        );
        create.push(format!(
            "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $ferry$\n{body}\n$ferry$"
        ));
        create.push(format!(
            "CREATE TRIGGER {} BEFORE INSERT OR UPDATE ON {qt} FOR EACH ROW \
             WHEN (current_setting('ferry.backfill', true) IS DISTINCT FROM {}) EXECUTE FUNCTION {function}()",
            quote(&trigger_name(migration)),
            literal(migration.as_str())
        ));
        drop.push(format!(
            "DROP TRIGGER IF EXISTS {} ON {qt}",
            quote(&trigger_name(migration))
        ));
        drop.push(format!("DROP FUNCTION IF EXISTS {function}()"));
    }
    SyncStatements { create, drop }
}

/// One direction's block: the row as variables named in that version, then the columns
/// that direction computes.
fn branch(
    qt: &str,
    shape: Option<&VTable>,
    rules: &[&SyncRule],
    direction: Direction,
    new_version: bool,
) -> String {
    let assignments: Vec<String> = rules
        .iter()
        .filter(|r| r.direction == direction)
        .map(|r| format!("      NEW.{} := ({});", quote(&r.column), r.expression))
        .collect();
    if assignments.is_empty() {
        return "    NULL;".into();
    }
    let variables: Vec<String> = shape
        .map(|t| {
            t.columns
                .iter()
                .filter(|c| new_version || c.existed)
                .map(|c| {
                    format!(
                        "      {} {qt}.{}%TYPE := NEW.{};",
                        quote(&c.name),
                        quote(&c.physical),
                        quote(&c.physical)
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "    DECLARE\n{}\n    BEGIN\n{}\n    END;",
        variables.join("\n"),
        assignments.join("\n")
    )
}
