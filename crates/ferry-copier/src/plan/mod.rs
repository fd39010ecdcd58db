//! The copy plan of one table: its columns and keys as read from the catalogue and validated
//! (`catalogue`), and the SQL the copier runs, built once from validated identifiers: the
//! batch copy statements (`batch`), the validation statements (`validation`) and
//! `MovedTable`'s single-row statements (`rows`), all on the key ranges built here.
//!
//! Every identifier in these statements is a [`SqlIdent`] (validated, then quoted); column
//! types come from PostgreSQL's own `format_type` and are checked against a conservative
//! character set before they are spliced into casts. Values are always bound parameters.

use ferry_domain::{SqlIdent, TenantKeyType};
use ferry_store::CopyDirection;

mod batch;
mod catalogue;
mod create;
mod rows;
mod types;
mod validation;

pub use catalogue::rewrites_inserts;
pub(crate) use catalogue::same_database;

/// A schema-qualified table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub schema: SqlIdent,
    pub name: SqlIdent,
}

impl Table {
    pub fn quoted(&self) -> String {
        format!("{}.{}", self.schema.quoted(), self.name.quoted())
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: SqlIdent,
    /// As spliced into casts: a built-in type as `format_type` prints it (e.g.
    /// `timestamp with time zone`, `numeric(12,2)`), a user's type schema-qualified and
    /// quoted (`"app"."status"`, `"app"."status"[]`).
    pub ty: String,
    /// The column's collation, if any: key ranges on text must sort alike on both sides, or
    /// a range would hold different rows on each.
    pub collation: Option<String>,
}

/// What the copier knows about the table pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub source: Table,
    pub target: Table,
    pub columns: Vec<Column>,
    pub tenant: SqlIdent,
    /// The tenant column's type: ids are bound as text and cast to it.
    pub tenant_type: TenantKeyType,
    pub version: SqlIdent,
    /// The primary key (the upsert's conflict target).
    pub key: Vec<Column>,
    /// The primary key without the tenant column: the keyset order within a tenant.
    pub order: Vec<Column>,
}

/// A key position: one text value per `order` column.
pub type Key = Vec<String>;

impl TablePlan {
    /// (from, to) tables of a copy direction.
    pub fn sides(&self, direction: CopyDirection) -> (&Table, &Table) {
        match direction {
            CopyDirection::Forward => (&self.source, &self.target),
            CopyDirection::Reverse => (&self.target, &self.source),
        }
    }

    /// The keyset order's columns as `alias.col<suffix>, …` (`suffix`: `""`, `" DESC"`,
    /// `"::text"`).
    fn order_columns(&self, alias: &str, suffix: &str) -> String {
        self.order
            .iter()
            .map(|c| format!("{alias}.{}{suffix}", c.name.quoted()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn order_list(&self, alias: &str) -> String {
        self.order_columns(alias, "")
    }

    /// `(t.k1, t.k2) <op> (CAST($n AS ty1), CAST($n+1 AS ty2))`.
    fn key_predicate(&self, op: &str, first_param: usize) -> String {
        let params = self
            .order
            .iter()
            .enumerate()
            .map(|(i, c)| format!("CAST(${} AS {})", first_param + i, c.ty))
            .collect::<Vec<_>>()
            .join(", ");
        format!("({}) {op} ({params})", self.order_list("t"))
    }

    fn key_text(&self) -> String {
        self.order_columns("t", "::text")
    }

    /// Whether `tenant` is a value of the tenant column's type, as PostgreSQL prints it:
    /// checked before any statement binds it, so a bad id fails up front with its name.
    pub fn check_tenant(&self, tenant: &ferry_domain::TenantId) -> Result<(), crate::CopyError> {
        self.tenant_type
            .check(tenant)
            .map_err(|mismatch| crate::CopyError::TenantKey {
                mismatch,
                table: self.source.to_string(),
                column: self.tenant.to_string(),
                ty: self.tenant_type.to_string(),
            })
    }

    /// `alias.tenant = CAST($1 AS <the tenant column's type>)`: the tenant id is always the
    /// first parameter, bound as text.
    fn tenant_match(&self, alias: &str) -> String {
        format!(
            "{alias}.{} = {}",
            self.tenant.quoted(),
            self.tenant_type.cast_param(1)
        )
    }

    /// `WHERE tenant = $1 [AND key > lower] [AND key <= upper]`, with the key parameters
    /// numbered from `$2`.
    fn range(&self, lower: bool, upper: bool) -> (String, usize) {
        let mut sql = self.tenant_match("t");
        let mut next = 2;
        if lower {
            sql.push_str(&format!(" AND {}", self.key_predicate(">", next)));
            next += self.order.len();
        }
        if upper {
            sql.push_str(&format!(" AND {}", self.key_predicate("<=", next)));
            next += self.order.len();
        }
        (sql, next)
    }
}

#[cfg(test)]
mod tests;
