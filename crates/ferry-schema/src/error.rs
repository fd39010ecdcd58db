//! What goes wrong: a plan refused before anything runs ([`PlanError`], naming the operation
//! and field), or a database step that failed ([`SchemaError`]).

use thiserror::Error;

/// A plan refused at `validate`: which operation (by index, from 0) and which field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}: {message}", where_(*.operation, field))]
pub struct PlanError {
    /// The operation's index in `operations`, or `None` for the plan's own fields.
    pub operation: Option<usize>,
    /// The field, as written in the plan (e.g. `column.name`).
    pub field: String,
    pub message: String,
}

fn where_(operation: Option<usize>, field: &str) -> String {
    match operation {
        Some(i) => format!("operations[{i}].{field}"),
        None => field.to_owned(),
    }
}

impl PlanError {
    pub fn at(operation: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        PlanError {
            operation: Some(operation),
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn top(field: impl Into<String>, message: impl Into<String>) -> Self {
        PlanError {
            operation: None,
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum SchemaError {
    #[error("the plan is invalid: {}", list(.0))]
    Plan(Vec<PlanError>),
    #[error("step {step:?}: {source}")]
    Step {
        step: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "step {step:?} gave up after {attempts} attempts: a lock on the table was not granted within lock_timeout ({lock_timeout_ms} ms); a long transaction holds it (see pg_stat_activity), end it or retry later"
    )]
    LockTimeout {
        step: String,
        attempts: u32,
        lock_timeout_ms: u64,
    },
    #[error("{0}")]
    Refused(String),
    #[error(
        "backfill of tenant {tenant}, table {table}: {rows} row(s) in the batch ending at {key:?} do not hold up(old) in the new column"
    )]
    BackfillMismatch {
        tenant: String,
        table: String,
        rows: u64,
        key: Vec<String>,
    },
    #[error("{what}: {source}")]
    Database {
        what: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),
}

fn list(errors: &[PlanError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Context for a database error.
pub(crate) trait DbContext<T> {
    fn db(self, what: impl Into<String>) -> Result<T, SchemaError>;
}

impl<T> DbContext<T> for Result<T, sqlx::Error> {
    fn db(self, what: impl Into<String>) -> Result<T, SchemaError> {
        self.map_err(|source| SchemaError::Database {
            what: what.into(),
            source,
        })
    }
}
