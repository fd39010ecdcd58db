//! The plan file as written: its settings and operations, parsed one operation at a time so an
//! error names the operation's index.

use ferry_copier::config::{BackpressureSettings, CopySettings};
use serde::Deserialize;

use crate::error::PlanError;

/// `{"schema": "public", "tenant_column": "tenant_id", "lock_timeout_ms": 2000,
/// "operations": [...]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub settings: Settings,
    pub operations: Vec<Operation>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The schema holding the tables; the version schema is `<schema>_<migration>`.
    #[serde(default = "public")]
    pub schema: String,
    /// The column that names a row's tenant, in every table the backfill walks.
    #[serde(default = "tenant_id")]
    pub tenant_column: String,
    /// How long one DDL statement may wait for its lock before it gives up and retries, so
    /// writers never queue behind it for longer.
    #[serde(default = "lock_timeout_ms")]
    pub lock_timeout_ms: u64,
    /// Attempts per step before `start`, `complete` or `rollback` gives up (backoff with
    /// jitter between them).
    #[serde(default = "ddl_attempts")]
    pub ddl_attempts: u32,
    /// The backfill's batches (the copier's settings: target batch time, sizes, rate limit).
    #[serde(default)]
    pub backfill: CopySettings,
    #[serde(default)]
    pub backpressure: BackpressureSettings,
    /// For editors: the JSON Schema this file follows. Ignored.
    #[serde(default, rename = "$schema")]
    pub json_schema: Option<String>,
}

fn public() -> String {
    "public".into()
}
fn tenant_id() -> String {
    "tenant_id".into()
}
fn lock_timeout_ms() -> u64 {
    2_000
}
fn ddl_attempts() -> u32 {
    10
}

/// A column as `add_column` and `create_table` declare it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default = "yes")]
    pub nullable: bool,
    /// A SQL expression.
    pub default: Option<String>,
    #[serde(default)]
    pub unique: bool,
    /// A SQL boolean expression over the column.
    pub check: Option<String>,
    pub references: Option<Reference>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub table: String,
    pub columns: Vec<String>,
    /// `no action` (default), `restrict`, `cascade`, `set null`, `set default`.
    #[serde(default)]
    pub on_delete: Option<String>,
}

/// One step of a plan. Names are the ones earlier operations of the same plan left.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    CreateTable {
        table: String,
        columns: Vec<ColumnDef>,
        primary_key: Vec<String>,
    },
    DropTable {
        table: String,
    },
    RenameTable {
        from: String,
        to: String,
    },
    AddColumn {
        table: String,
        column: ColumnDef,
        /// The new column's value for rows written by the old version and for history:
        /// a SQL expression over the table's columns as they were before the plan.
        up: Option<String>,
    },
    DropColumn {
        table: String,
        column: String,
        /// The dropped column's value for rows the new version writes: a SQL expression over
        /// the columns as they are after the plan. Needed when the column is NOT NULL
        /// without a default.
        down: Option<String>,
    },
    RenameColumn {
        table: String,
        from: String,
        to: String,
    },
    ChangeType {
        table: String,
        column: String,
        #[serde(rename = "type")]
        ty: String,
        up: String,
        down: String,
        /// The column's default in the new type (a SQL expression). Without it the default
        /// does not carry over: an old default need not be a value of the new type.
        default: Option<String>,
    },
    SetNotNull {
        table: String,
        column: String,
        /// The value of rows that hold NULL (e.g. `coalesce(email, '')`).
        up: String,
    },
    DropNotNull {
        table: String,
        column: String,
        /// The value the old version sees for a NULL the new version writes.
        down: String,
    },
    SetDefault {
        table: String,
        column: String,
        default: String,
    },
    DropDefault {
        table: String,
        column: String,
    },
    AddUnique {
        table: String,
        name: String,
        columns: Vec<String>,
    },
    AddCheck {
        table: String,
        name: String,
        check: String,
    },
    AddForeignKey {
        table: String,
        name: String,
        columns: Vec<String>,
        references: Reference,
    },
    DropConstraint {
        table: String,
        name: String,
    },
    CreateIndex {
        table: String,
        name: String,
        columns: Vec<String>,
        #[serde(default)]
        unique: bool,
        /// `btree` (default), `hash`, `gin`, `gist`, `brin`.
        method: Option<String>,
    },
    DropIndex {
        name: String,
    },
    CreateEnum {
        name: String,
        values: Vec<String>,
    },
    AddEnumValue {
        #[serde(rename = "type")]
        ty: String,
        value: String,
    },
    RawSql {
        up: String,
        down: String,
    },
}

impl Operation {
    /// The name as written in a plan (`"op": "add_column"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::CreateTable { .. } => "create_table",
            Operation::DropTable { .. } => "drop_table",
            Operation::RenameTable { .. } => "rename_table",
            Operation::AddColumn { .. } => "add_column",
            Operation::DropColumn { .. } => "drop_column",
            Operation::RenameColumn { .. } => "rename_column",
            Operation::ChangeType { .. } => "change_type",
            Operation::SetNotNull { .. } => "set_not_null",
            Operation::DropNotNull { .. } => "drop_not_null",
            Operation::SetDefault { .. } => "set_default",
            Operation::DropDefault { .. } => "drop_default",
            Operation::AddUnique { .. } => "add_unique",
            Operation::AddCheck { .. } => "add_check",
            Operation::AddForeignKey { .. } => "add_foreign_key",
            Operation::DropConstraint { .. } => "drop_constraint",
            Operation::CreateIndex { .. } => "create_index",
            Operation::DropIndex { .. } => "drop_index",
            Operation::CreateEnum { .. } => "create_enum",
            Operation::AddEnumValue { .. } => "add_enum_value",
            Operation::RawSql { .. } => "raw_sql",
        }
    }
}

/// Every operation's name, for error messages and the JSON Schema's test.
pub const OPERATIONS: &[&str] = &[
    "create_table",
    "drop_table",
    "rename_table",
    "add_column",
    "drop_column",
    "rename_column",
    "change_type",
    "set_not_null",
    "drop_not_null",
    "set_default",
    "drop_default",
    "add_unique",
    "add_check",
    "add_foreign_key",
    "drop_constraint",
    "create_index",
    "drop_index",
    "create_enum",
    "add_enum_value",
    "raw_sql",
];

impl Plan {
    /// Parses a plan, every operation on its own so each error names its index; all errors
    /// are returned, not only the first.
    pub fn from_json(value: &serde_json::Value) -> Result<Plan, Vec<PlanError>> {
        let Some(object) = value.as_object() else {
            return Err(vec![PlanError::top("plan", "must be a JSON object")]);
        };
        let mut top = object.clone();
        let operations = top.remove("operations");
        let mut errors = Vec::new();
        let settings = match serde_json::from_value::<Settings>(serde_json::Value::Object(top)) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(PlanError::top("plan", e.to_string()));
                None
            }
        };
        let list = match operations {
            Some(serde_json::Value::Array(list)) if !list.is_empty() => list,
            Some(serde_json::Value::Array(_)) => {
                errors.push(PlanError::top("operations", "is empty: nothing to do"));
                Vec::new()
            }
            Some(_) => {
                errors.push(PlanError::top("operations", "must be a list of operations"));
                Vec::new()
            }
            None => {
                errors.push(PlanError::top("operations", "is missing"));
                Vec::new()
            }
        };
        let mut parsed = Vec::new();
        for (i, op) in list.into_iter().enumerate() {
            match parse_operation(i, op) {
                Ok(op) => parsed.push(op),
                Err(e) => errors.push(e),
            }
        }
        match settings {
            Some(settings) if errors.is_empty() => Ok(Plan {
                settings,
                operations: parsed,
            }),
            _ => Err(errors),
        }
    }
}

fn parse_operation(i: usize, op: serde_json::Value) -> Result<Operation, PlanError> {
    let kind = op.get("op").and_then(|k| k.as_str()).map(str::to_owned);
    match kind {
        None => Err(PlanError::at(
            i,
            "op",
            format!("is missing; one of: {}", OPERATIONS.join(", ")),
        )),
        Some(k) if !OPERATIONS.contains(&k.as_str()) => Err(PlanError::at(
            i,
            "op",
            format!("unknown operation {k:?}; one of: {}", OPERATIONS.join(", ")),
        )),
        Some(k) => serde_json::from_value(op).map_err(|e| {
            let message = e.to_string();
            PlanError::at(i, field_named(&message).unwrap_or(k), message)
        }),
    }
}

/// The field serde names in "missing field `up`" or "unknown field `x`, expected …".
fn field_named(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next().map(str::to_owned)
}
