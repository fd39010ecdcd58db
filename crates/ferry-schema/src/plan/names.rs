//! Names in a plan: checked before they reach SQL, and quoted when they do.
//!
//! A name Ferry creates must be 1–63 bytes of lowercase `a-z 0-9 _` starting with a letter
//! or `_`, and not a word PostgreSQL reserves: a name that would need quoting in the
//! application's own SQL is refused rather than silently case-folded or quoted.

use ferry_domain::MigrationId;

use super::Settings;
use crate::catalogue::Catalogue;
use crate::error::PlanError;

/// PostgreSQL truncates longer identifiers to this many bytes.
pub const MAX_NAME: usize = 63;

/// The prefix of the columns a plan adds beside the ones it changes.
pub const NEW_PREFIX: &str = "_ferry_new_";

/// `"name"`, with any `"` doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote(schema), quote(name))
}

/// A string literal, `'…'` with `'` doubled.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Why `name` cannot be used as written, if it cannot.
pub fn problem(name: &str, catalogue: &Catalogue) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".into());
    }
    if name.len() > MAX_NAME {
        return Some(format!(
            "{name:?} is {} bytes; PostgreSQL truncates names at {MAX_NAME}",
            name.len()
        ));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok {
        return Some(format!(
            "{name:?} would need quoting: use lowercase letters, digits and '_', starting with a letter or '_'"
        ));
    }
    if catalogue.reserved.contains(name) {
        return Some(format!(
            "{name:?} is a word PostgreSQL reserves and would need quoting"
        ));
    }
    None
}

/// Checks a name, as an error at `operations[i].field`.
pub fn check(i: usize, field: &str, name: &str, catalogue: &Catalogue) -> Result<(), PlanError> {
    match problem(name, catalogue) {
        Some(message) => Err(PlanError::at(i, field, message)),
        None => Ok(()),
    }
}

/// A SQL expression from the plan: not empty, and no statement separator outside quotes (an
/// expression is spliced into statements Ferry builds; it is the plan author's SQL, like a
/// migration file, but it must stay one expression).
pub fn check_expression(i: usize, field: &str, sql: &str) -> Result<(), PlanError> {
    if sql.trim().is_empty() {
        return Err(PlanError::at(i, field, "is empty"));
    }
    let (mut in_single, mut in_double) = (false, false);
    for c in sql.chars() {
        match c {
            '\'' if !in_double => in_single = !in_single,
            '"' if !in_single => in_double = !in_double,
            ';' if !in_single && !in_double => {
                return Err(PlanError::at(
                    i,
                    field,
                    "must be one SQL expression, without ';' (use raw_sql for statements)",
                ));
            }
            _ => {}
        }
    }
    if in_single || in_double {
        return Err(PlanError::at(i, field, "has an unterminated quote"));
    }
    Ok(())
}

/// The plan's own fields.
pub fn check_settings(
    settings: &Settings,
    migration: &MigrationId,
    catalogue: &Catalogue,
) -> Vec<PlanError> {
    let mut errors = Vec::new();
    if !catalogue.schemas.contains(&settings.schema) {
        errors.push(PlanError::top(
            "schema",
            format!("schema {:?} does not exist", settings.schema),
        ));
    }
    let version = format!("{}_{}", settings.schema, migration);
    if version.len() > MAX_NAME {
        errors.push(PlanError::top(
            "schema",
            format!(
                "the version schema {version:?} would be {} bytes, over PostgreSQL's {MAX_NAME}: use a shorter migration id",
                version.len()
            ),
        ));
    }
    if settings.lock_timeout_ms == 0 {
        errors.push(PlanError::top(
            "lock_timeout_ms",
            "must be at least 1: 0 means wait forever, with writers queued behind",
        ));
    }
    if settings.ddl_attempts == 0 {
        errors.push(PlanError::top("ddl_attempts", "must be at least 1"));
    }
    let b = &settings.backfill;
    if b.min_batch == 0 || b.min_batch > b.max_batch {
        errors.push(PlanError::top(
            "backfill.min_batch",
            format!(
                "({}) must be at least 1 and at most backfill.max_batch ({})",
                b.min_batch, b.max_batch
            ),
        ));
    }
    errors
}
