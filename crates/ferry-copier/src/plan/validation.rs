//! The statements that validate a copy, so that rows never travel to be compared: a side's
//! key range reduced to a count and a digest (an XOR of typed row hashes in one database, an
//! md5 over row text across two), a merge of both ranges where one server holds both but
//! cannot hash, per-row digests to find what differs, and the guarded delete that repairs an
//! extra row.

use sqlx::PgPool;

use super::{Column, Table, TablePlan};

impl TablePlan {
    fn row_text(&self) -> String {
        let cols = self
            .columns
            .iter()
            .map(|c| format!("t.{}", c.name.quoted()))
            .collect::<Vec<_>>()
            .join(", ");
        format!("ROW({cols})::text")
    }

    /// A column's value as compared between the sides: typed where typed equality is what a
    /// user would call the same data; as text where it is not (item 11 of the review):
    /// unconstrained `numeric` (`1.0 = 1.00`, though they print differently; a `numeric(p,s)`
    /// column stores one scale, so typed is exact there), floats (`-0 = 0`), and text under a
    /// collation other than the default, which may be nondeterministic (`'Acme' = 'ACME'`
    /// under a case-insensitive one), compared as bytes; and as text for the few types with
    /// no equality (and hashing) operators.
    fn comparable(&self, alias: &str, c: &Column) -> String {
        let column = format!("{alias}.{}", c.name.quoted());
        let element = c.ty.trim_end_matches("[]");
        let textual = matches!(
            element,
            "json"
                | "xml"
                | "point"
                | "line"
                | "lseg"
                | "box"
                | "path"
                | "polygon"
                | "circle"
                | "numeric"
                | "real"
                | "double precision"
        );
        let collated = c
            .collation
            .as_deref()
            .is_some_and(|name| !matches!(name, "default" | "C" | "POSIX"));
        if collated {
            // Bytes, so no collation can call two different strings equal.
            format!("convert_to({column}::text, 'UTF8')")
        } else if textual {
            format!("{column}::text")
        } else {
            column
        }
    }

    /// A 64-bit hash of a row's values, typed where that is exact (see `comparable`), in the
    /// plan's column order so both tables hash alike whatever their own order.
    /// Needs PostgreSQL 14 (`hash_record_extended`); see [`TablePlan::probe_row_hash`].
    pub fn row_hash(&self, alias: &str) -> String {
        let values = self
            .columns
            .iter()
            .map(|c| self.comparable(alias, c))
            .collect::<Vec<_>>()
            .join(", ");
        format!("hash_record_extended(ROW({values}), 0)")
    }

    /// `(row count, XOR of row hashes)` of a key range: order-free, so one index scan and no
    /// sort; keys are unique, so no two rows of a side can cancel out.
    pub fn range_digest(&self, side: &Table, lower: bool, upper: bool) -> String {
        let (range, _) = self.range(lower, upper);
        format!(
            "SELECT count(*)::bigint, coalesce(bit_xor({}), 0) FROM {} AS t WHERE {range}",
            self.row_hash("t"),
            side.quoted(),
        )
    }

    /// Runs [`TablePlan::row_hash`] once over NULLs of every column type of `side`: an error
    /// means the server (before 14) or a column type cannot hash, and the copier compares by
    /// a merge of both ranges instead.
    pub async fn probe_row_hash(&self, pool: &PgPool, side: &Table) -> bool {
        let sql = format!(
            "SELECT coalesce(bit_xor({}), 0) FROM (SELECT) AS one LEFT JOIN {} AS t ON false",
            self.row_hash("t"),
            side.quoted(),
        );
        match sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .fetch_one(pool)
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(table = %side, "row hashing unavailable, validating by merge: {e}");
                false
            }
        }
    }

    /// Row count and a digest of the rows of a key range, in key order; computed in SQL so
    /// rows do not travel to compare them.
    pub fn checksum(&self, side: &Table, lower: bool, upper: bool) -> String {
        let (range, _) = self.range(lower, upper);
        format!(
            "SELECT count(*)::bigint, coalesce(md5(string_agg(md5({}), '' ORDER BY {})), '') FROM {} AS t WHERE {range}",
            self.row_text(),
            self.order_list("t"),
            side.quoted(),
        )
    }

    /// When both tables are in one database: how many rows of a key range differ between
    /// them (missing on either side, or any column distinct), by a merge of the two ranges on
    /// the key, comparing typed values rather than formatting and hashing every row. Types
    /// without an equality operator are compared as text.
    pub fn count_differences_local(
        &self,
        from: &Table,
        to: &Table,
        lower: bool,
        upper: bool,
    ) -> String {
        let (range, _) = self.range(lower, upper);
        let on = self
            .key
            .iter()
            .map(|c| format!("s.{0} = d.{0}", c.name.quoted()))
            .collect::<Vec<_>>()
            .join(" AND ");
        let left = self
            .columns
            .iter()
            .map(|c| self.comparable("s", c))
            .collect::<Vec<_>>()
            .join(", ");
        let right = self
            .columns
            .iter()
            .map(|c| self.comparable("d", c))
            .collect::<Vec<_>>()
            .join(", ");
        let first_key = self.key[0].name.quoted();
        format!(
            "SELECT count(*)::bigint FROM (SELECT * FROM {} AS t WHERE {range}) AS s \
             FULL JOIN (SELECT * FROM {} AS t WHERE {range}) AS d ON {on} \
             WHERE s.{first_key} IS NULL OR d.{first_key} IS NULL OR ROW({left}) IS DISTINCT FROM ROW({right})",
            from.quoted(),
            to.quoted(),
        )
    }

    /// Per-row digests of a key range: `(key..., md5, xmin)`, to find which rows differ.
    pub fn digests(&self, side: &Table, lower: bool, upper: bool) -> String {
        let (range, _) = self.range(lower, upper);
        format!(
            "SELECT json_build_array({})::text, md5({}), t.xmin::text FROM {} AS t WHERE {range} ORDER BY {}",
            self.key_text(),
            self.row_text(),
            side.quoted(),
            self.order_list("t"),
        )
    }

    /// Deletes a row only if it is still the version observed (`xmin`), so a row re-inserted
    /// meanwhile is never deleted.
    pub fn delete_if_unchanged(&self, side: &Table) -> String {
        format!(
            "DELETE FROM {} AS t WHERE {} AND {} AND t.xmin::text = ${}",
            side.quoted(),
            self.tenant_match("t"),
            self.key_predicate("=", 2),
            2 + self.order.len(),
        )
    }
}
