//! The plan's statements for one copy direction, built once.

use std::sync::Arc;

use ferry_store::CopyDirection;

use crate::plan::{Key, TablePlan};

/// Statements as shared strings, so each execution does not rebuild or copy them.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub select_first: Arc<str>,
    pub select_after: Arc<str>,
    pub select_key: Arc<str>,
    pub upsert: Arc<str>,
    /// Same database, the destination clear above the batch's lower bound: a plain insert
    /// streamed from the key index ([`TablePlan::copy_batch_local_clear`]).
    pub local_clear_first: Arc<str>,
    pub local_clear_after: Arc<str>,
    /// One-statement batches, for tables in the same database: a plain insert when the
    /// destination range is clear, else the upsert.
    pub local_first: Arc<str>,
    pub local_after: Arc<str>,
    /// The same, always by upsert: after a plain insert met a row written meanwhile.
    pub local_first_upsert: Arc<str>,
    pub local_after_upsert: Arc<str>,
    /// Indexed by (lower bound?, upper bound?).
    pub checksum_from: [Arc<str>; 4],
    pub checksum_to: [Arc<str>; 4],
    pub digests_from: [Arc<str>; 4],
    /// Same database only: the number of differing rows in a range, by a merge join.
    pub differences_local: [Arc<str>; 4],
    /// Same database only: `(count, XOR of row hashes)` of a range on each side.
    pub digest_from: [Arc<str>; 4],
    pub digest_to: [Arc<str>; 4],
    pub digests_to: [Arc<str>; 4],
    pub delete_if_unchanged_to: Arc<str>,
    pub count_from: Arc<str>,
    pub count_to: Arc<str>,
    pub delete_batch_source: Arc<str>,
}

pub(crate) fn bounds_index(lower: bool, upper: bool) -> usize {
    usize::from(lower) * 2 + usize::from(upper)
}

impl Statements {
    /// `hashing`: the server can hash rows ([`TablePlan::probe_row_hash`]), so one-statement
    /// batches also return their digest; `returned_digest`: and nothing rewrites inserts into
    /// the destination, so a plain insert's returned rows can be hashed for it.
    pub fn new(
        plan: &TablePlan,
        direction: CopyDirection,
        lock: bool,
        hashing: bool,
        returned_digest: bool,
    ) -> Statements {
        let (from, to) = plan.sides(direction);
        let each = |f: &dyn Fn(bool, bool) -> String| -> [Arc<str>; 4] {
            [
                f(false, false).into(),
                f(false, true).into(),
                f(true, false).into(),
                f(true, true).into(),
            ]
        };
        Statements {
            select_first: plan.select_batch(from, false, lock).into(),
            select_after: plan.select_batch(from, true, lock).into(),
            select_key: plan.select_key(from).into(),
            upsert: plan.upsert(to).into(),
            local_clear_first: plan
                .copy_batch_local_clear(from, to, false, lock, hashing && returned_digest)
                .into(),
            local_clear_after: plan
                .copy_batch_local_clear(from, to, true, lock, hashing && returned_digest)
                .into(),
            local_first: plan
                .copy_batch_local(from, to, false, lock, hashing, true)
                .into(),
            local_after: plan
                .copy_batch_local(from, to, true, lock, hashing, true)
                .into(),
            local_first_upsert: plan
                .copy_batch_local(from, to, false, lock, hashing, false)
                .into(),
            local_after_upsert: plan
                .copy_batch_local(from, to, true, lock, hashing, false)
                .into(),
            checksum_from: each(&|l, u| plan.checksum(from, l, u)),
            checksum_to: each(&|l, u| plan.checksum(to, l, u)),
            digests_from: each(&|l, u| plan.digests(from, l, u)),
            differences_local: each(&|l, u| plan.count_differences_local(from, to, l, u)),
            digest_from: each(&|l, u| plan.range_digest(from, l, u)),
            digest_to: each(&|l, u| plan.range_digest(to, l, u)),
            digests_to: each(&|l, u| plan.digests(to, l, u)),
            delete_if_unchanged_to: plan.delete_if_unchanged(to).into(),
            count_from: plan.count(from).into(),
            count_to: plan.count(to).into(),
            delete_batch_source: plan.delete_batch(&plan.source).into(),
        }
    }
}

/// Binds a key's text values, in order.
pub(crate) fn bind_key<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    key: &'q Key,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for value in key {
        query = query.bind(value.as_str());
    }
    query
}
