//! A plan: parsed ([`model`]), checked against the live catalogue and resolved into the SQL
//! of every step of `start`, `complete` and `rollback` ([`Resolved`]). Resolving is the
//! check: each operation is applied in order to a virtual copy of the schema
//! ([`virtual_schema`]), so a missing table, a taken name or two operations that conflict
//! are refused before anything runs, naming the operation's index and field.

mod model;
pub(crate) mod names;
pub(crate) mod virtual_schema;

use ferry_domain::MigrationId;

pub use model::{ColumnDef, OPERATIONS, Operation, Plan, Reference, Settings};

use crate::catalogue::Catalogue;
use crate::error::PlanError;
use virtual_schema::VSchema;

/// How a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Its statements in one transaction under `lock_timeout`, recorded done in the same
    /// transaction (so it runs exactly once), retried whole on a lock timeout.
    Transaction,
    /// Outside a transaction (`CREATE INDEX CONCURRENTLY`), one statement after another; each
    /// is idempotent, so a step interrupted half-way runs again from its start.
    Concurrent,
    /// One query counting rows that would be lost: anything but 0 refuses the action.
    Check,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub label: String,
    pub kind: StepKind,
    pub statements: Vec<String>,
}

impl Step {
    pub fn transaction(label: impl Into<String>, statements: Vec<String>) -> Step {
        Step {
            label: label.into(),
            kind: StepKind::Transaction,
            statements,
        }
    }

    pub fn concurrent(label: impl Into<String>, statements: Vec<String>) -> Step {
        Step {
            label: label.into(),
            kind: StepKind::Concurrent,
            statements,
        }
    }

    pub fn check(label: impl Into<String>, count_query: String) -> Step {
        Step {
            label: label.into(),
            kind: StepKind::Check,
            statements: vec![count_query],
        }
    }
}

/// What a tenant's backfill writes in one table: each new column's `up(old)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableBackfill {
    /// The physical table, quoted and schema-qualified.
    pub table: String,
    /// The table's name, for progress and errors.
    pub name: String,
    pub tenant_column: String,
    /// The tenant column's type as `format_type` prints it, for the cast of the bound id.
    pub tenant_type: String,
    /// The primary key without the tenant column: (column, type), the keyset order.
    pub order: Vec<(String, String)>,
    /// (physical new column, `up` expression).
    pub columns: Vec<(String, String)>,
    /// The new columns that are NOT NULL in the new shape: a NULL in one at `complete` is a
    /// row never backfilled.
    pub required: Vec<String>,
}

/// A plan checked against the catalogue, with every statement it will run.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub migration: MigrationId,
    pub settings: Settings,
    /// The schema of views showing the new shape: `<schema>_<migration>`.
    pub version_schema: String,
    pub start: Vec<Step>,
    pub complete: Vec<Step>,
    pub rollback: Vec<Step>,
    pub backfills: Vec<TableBackfill>,
}

/// What operations add while they are resolved, in order.
#[derive(Debug, Default)]
pub(crate) struct Collected {
    /// Statements of `start`'s one transaction (before triggers and views).
    pub expand: Vec<String>,
    /// `start`'s steps after that transaction (concurrent index builds).
    pub expand_after: Vec<Step>,
    /// `complete`'s steps before the contract (validations, concurrent builds): they take no
    /// lock that blocks writers.
    pub complete_before: Vec<Step>,
    /// Statements of `complete`'s one contract transaction.
    pub contract: Vec<String>,
    /// The contract's table renames, run after every other contract statement (which name
    /// tables as they are physically until then).
    pub contract_last: Vec<String>,
    /// `complete`'s steps after it (concurrent index drops).
    pub complete_after: Vec<Step>,
    /// Per operation, its rollback: transaction statements and concurrent steps. Run in
    /// reverse operation order.
    pub rollback: Vec<(Vec<String>, Vec<Step>)>,
    /// Triggers keep the shapes in step: (table, physical target column, expression,
    /// whether the new version's writes compute it).
    pub sync: Vec<SyncRule>,
    pub backfills: Vec<(String, String, String)>,
    /// Defaults of the new version's views: (physical table, physical column, expression).
    pub view_defaults: Vec<(String, String, String)>,
}

/// One column kept in step by the table's trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyncRule {
    /// The physical table.
    pub table: String,
    /// The physical column written.
    pub column: String,
    pub expression: String,
    /// `Up`: computed when the old version writes; `Down`: when the new version writes.
    pub direction: Direction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Up,
    Down,
}

impl Plan {
    /// Checks the plan against the catalogue and builds every step. All problems found are
    /// returned, not only the first.
    pub fn resolve(
        &self,
        migration: &MigrationId,
        catalogue: &Catalogue,
    ) -> Result<Resolved, Vec<PlanError>> {
        let settings = &self.settings;
        let mut errors = names::check_settings(settings, migration, catalogue);
        let version_schema = format!("{}_{}", settings.schema, migration);
        let mut vs = VSchema::from_catalogue(catalogue);
        let before = vs.clone();
        let mut collected = Collected::default();
        for (i, op) in self.operations.iter().enumerate() {
            if let Err(e) = crate::ops::resolve(i, op, &mut vs, &mut collected) {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let backfills = collected
            .backfills
            .iter()
            .map(|(table, column, up)| (table.clone(), column.clone(), up.clone()))
            .collect::<Vec<_>>();
        let tables = crate::backfill::tables(settings, &vs, &backfills).map_err(|e| vec![e])?;
        let sync = crate::sync::statements(migration, settings, &before, &vs, &collected.sync);
        let views =
            crate::views::statements(settings, &version_schema, &vs, &collected.view_defaults);
        Ok(assemble(
            migration,
            settings,
            version_schema,
            collected,
            sync,
            views,
            tables,
        ))
    }
}

fn assemble(
    migration: &MigrationId,
    settings: &Settings,
    version_schema: String,
    c: Collected,
    sync: crate::sync::SyncStatements,
    views: crate::views::ViewStatements,
    backfills: Vec<TableBackfill>,
) -> Resolved {
    let mut expand = c.expand;
    expand.extend(sync.create.iter().cloned());
    expand.extend(views.create.iter().cloned());
    let mut start = vec![Step::transaction("expand", expand)];
    start.extend(c.expand_after);

    let mut complete = c.complete_before;
    for b in &backfills {
        for (column, up) in b.columns.iter().filter(|(c, _)| b.required.contains(c)) {
            complete.push(Step::check(
                format!("every row of {} is backfilled ({column})", b.name),
                // Only NOT NULL columns: in a nullable one, a NULL the new version wrote and
                // a row never backfilled look alike (every tenant's backfill is recorded in
                // the control store, and `complete` waits for every tenant at target_only).
                format!(
                    "SELECT count(*) FROM {} WHERE {} IS NULL AND ({up}) IS NOT NULL",
                    b.table,
                    names::quote(column)
                ),
            ));
        }
    }
    let mut contract = views.drop.clone();
    contract.extend(sync.drop.iter().cloned());
    contract.extend(c.contract);
    contract.extend(c.contract_last);
    complete.push(Step::transaction("contract", contract));
    complete.extend(c.complete_after);

    let mut undo = views.drop;
    undo.extend(sync.drop);
    let mut after = Vec::new();
    for (statements, steps) in c.rollback.into_iter().rev() {
        undo.extend(statements);
        after.extend(steps);
    }
    // Concurrent drops (indexes built during start) first: nothing else depends on them.
    let mut rollback = after;
    rollback.push(Step::transaction("undo", undo));
    let _ = migration;
    Resolved {
        migration: migration.clone(),
        settings: settings.clone(),
        version_schema,
        start,
        complete,
        rollback,
        backfills,
    }
}

impl Resolved {
    /// Every step of `start`, `complete` and `rollback`, as `ferry schema plan` prints them.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (action, steps) in [
            ("start", &self.start),
            ("complete", &self.complete),
            ("rollback", &self.rollback),
        ] {
            out.push_str(&format!("-- ferry schema {action} {}\n", self.migration));
            for step in steps {
                let how = match step.kind {
                    StepKind::Transaction => "one transaction, lock_timeout",
                    StepKind::Concurrent => "no transaction",
                    StepKind::Check => "a check: refuses unless 0",
                };
                out.push_str(&format!("-- step {:?} ({how})\n", step.label));
                for s in &step.statements {
                    out.push_str(s);
                    out.push_str(";\n");
                }
            }
            if action == "start" && !self.backfills.is_empty() {
                out.push_str("-- then, per tenant (ferry schema backfill):\n");
                for b in &self.backfills {
                    for (column, up) in &b.columns {
                        out.push_str(&format!(
                            "--   {}.{column} = {up}, in keyset batches on ({})\n",
                            b.name,
                            b.order
                                .iter()
                                .map(|(c, _)| c.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
            }
            out.push('\n');
        }
        out
    }
}
