//! The single-row statements `MovedTable` runs on either side while a tenant moves: select,
//! insert, update and delete by key, always bound to the tenant asked for, and the version
//! each write gives a row (it only grows, so the copier's version guard keeps the newest).

use super::{Column, Table, TablePlan};

/// Microseconds since the epoch: a bigint version that also grows across a delete and a
/// re-insert of the same key (a counter starting at 1 would not, and the re-inserted row would
/// look older than a stale copy of the deleted one).
macro_rules! epoch_micros {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
    };
}
const EPOCH_MICROS: &str = epoch_micros!();

impl TablePlan {
    /// The version a write gives a row: one more than before (integers) or now, but always
    /// later than before (timestamps), so versions only grow.
    fn version_type(&self) -> &str {
        self.columns
            .iter()
            .find(|c| c.name == self.version)
            .map_or("bigint", |c| c.ty.as_str())
    }

    fn next_version(&self, alias: &str) -> String {
        let v = format!("{alias}.{}", self.version.quoted());
        let ty = self.version_type();
        if ty.starts_with("timestamp") {
            format!("greatest(clock_timestamp()::{ty}, {v} + interval '1 microsecond')")
        } else if ty == "bigint" {
            format!("greatest({v} + 1, {EPOCH_MICROS})")
        } else {
            format!("{v} + 1")
        }
    }

    fn first_version(&self) -> &'static str {
        let ty = self.version_type();
        if ty.starts_with("timestamp") {
            "clock_timestamp()"
        } else if ty == "bigint" {
            EPOCH_MICROS
        } else {
            "1"
        }
    }

    /// Whether `side` holds the row of the image `$1` (JSON) with a strictly newer version:
    /// asked when a mirror's version-guarded upsert changed nothing, to tell an idempotent
    /// repeat (same version) from a divergence (the other side is ahead of the authority).
    pub fn newer_than_image(&self, side: &Table) -> String {
        let on = self
            .key
            .iter()
            .map(|c| format!("t.{0} = r.{0}", c.name.quoted()))
            .collect::<Vec<_>>()
            .join(" AND ");
        format!(
            "SELECT t.{v} > r.{v} FROM {t} AS t, json_populate_record(NULL::{t}, $1::json) AS r WHERE {on}",
            v = self.version.quoted(),
            t = side.quoted(),
        )
    }

    /// One row by key, as JSON.
    pub fn select_row(&self, side: &Table) -> String {
        format!(
            "SELECT to_json(t)::text FROM {} AS t WHERE {} AND {}",
            side.quoted(),
            self.tenant_match("t"),
            self.key_predicate("=", 2),
        )
    }

    /// Inserts a row from JSON (`$2`): the given `columns`, the tenant column set to `$1`
    /// and the version to the first one; columns not given get their defaults. Returns the
    /// stored row as JSON.
    pub fn insert_row(&self, side: &Table, columns: &[Column]) -> String {
        let given: Vec<&Column> = columns
            .iter()
            .filter(|c| c.name != self.tenant && c.name != self.version)
            .collect();
        let mut list: Vec<String> = given.iter().map(|c| c.name.quoted()).collect();
        let mut values: Vec<String> = given
            .iter()
            .map(|c| format!("r.{}", c.name.quoted()))
            .collect();
        list.push(self.tenant.quoted());
        values.push(self.tenant_type.cast_param(1));
        list.push(self.version.quoted());
        values.push(self.first_version().into());
        format!(
            "INSERT INTO {0} AS t ({1}) SELECT {2} FROM json_populate_record(NULL::{0}, $2::json) AS r RETURNING to_json(t)::text",
            side.quoted(),
            list.join(", "),
            values.join(", "),
        )
    }

    /// Updates the given columns of one row from JSON (the last parameter), bumping its
    /// version; returns the stored row as JSON.
    pub fn update_row(&self, side: &Table, columns: &[Column]) -> String {
        let json = 2 + self.order.len();
        let list = columns
            .iter()
            .map(|c| c.name.quoted())
            .collect::<Vec<_>>()
            .join(", ");
        let from_json = columns
            .iter()
            .map(|c| format!("r.{}", c.name.quoted()))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "UPDATE {0} AS t SET ({list}) = (SELECT {from_json} FROM json_populate_record(NULL::{0}, ${json}::json) AS r), {1} = {2} WHERE {3} AND {4} RETURNING to_json(t)::text",
            side.quoted(),
            self.version.quoted(),
            self.next_version("t"),
            self.tenant_match("t"),
            self.key_predicate("=", 2),
        )
    }

    /// Deletes one row by key; returns its key if it existed.
    pub fn delete_row(&self, side: &Table) -> String {
        format!(
            "DELETE FROM {} AS t WHERE {} AND {} RETURNING 1",
            side.quoted(),
            self.tenant_match("t"),
            self.key_predicate("=", 2),
        )
    }
}
