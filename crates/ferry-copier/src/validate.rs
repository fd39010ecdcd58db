//! Validation as the copy goes: compare a key range on both sides by checksum, computed in
//! SQL; on a difference, wait for the source's transactions in flight at the first look to
//! end and look again (a concurrent write can explain it), then find the rows that differ,
//! repair what the copy can repair, and record the rest as mismatches. A destination row is
//! deleted as an extra only once no source transaction that could still commit it is in
//! flight (see `in_flight`).

use std::collections::BTreeMap;

use ferry_domain::TenantId;
use ferry_store::CopyDirection;
use sqlx::{AssertSqlSafe, PgPool};

use crate::copier::Copier;
use crate::error::CopyError;
use crate::in_flight::{IN_FLIGHT_LIMIT, wait_for_transactions_in_flight};
use crate::plan::Key;
use crate::sql::{bind_key, bounds_index};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeCheck {
    /// Rows the copier fixed: re-copied, or deleted from the destination as extras.
    pub repaired: u64,
    /// Rows that still differ after repair, recorded in the control store.
    pub mismatches: u64,
}

/// `(row count, XOR of 64-bit row hashes)` of a key range.
pub type Digest = (i64, i64);

/// A row as one look saw it: `(md5 of its values, xmin)`.
pub type RowSeen = (String, String);

/// The difference between two sides of a key range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// In `from` only.
    pub missing: Vec<String>,
    /// In `to` only, with the `xmin` observed (so deleting it is safe against a re-insert).
    pub extra: Vec<(String, String)>,
    /// In both, different.
    pub differing: Vec<String>,
    /// What each side held for every key above: `(md5, xmin)` of the row in `from` and in
    /// `to`, `None` where absent. Two looks that saw the same for a key saw a settled
    /// difference; a write in flight changes one side between looks.
    pub observed: BTreeMap<String, (Option<RowSeen>, Option<RowSeen>)>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.differing.is_empty()
    }

    /// The differences both looks saw identically (same rows on both sides): settled ones,
    /// not writes in flight.
    pub fn intersect(&self, other: &Diff) -> Diff {
        let settled = |k: &String| {
            let seen = self.observed.get(k);
            seen.is_some() && seen == other.observed.get(k)
        };
        let keep = |keys: &[String]| -> Vec<String> {
            keys.iter().filter(|k| settled(k)).cloned().collect()
        };
        let extra: Vec<(String, String)> = self
            .extra
            .iter()
            .filter(|(k, _)| settled(k))
            .cloned()
            .collect();
        let missing = keep(&self.missing);
        let differing = keep(&self.differing);
        let observed = missing
            .iter()
            .chain(&differing)
            .chain(extra.iter().map(|(k, _)| k))
            .filter_map(|k| self.observed.get(k).map(|o| (k.clone(), o.clone())))
            .collect();
        Diff {
            missing,
            extra,
            differing,
            observed,
        }
    }
}

/// Per-row digests: key (JSON array text) -> (md5, xmin).
type Digests = BTreeMap<String, (String, String)>;

fn diff(from: &Digests, to: &Digests) -> Diff {
    let mut d = Diff::default();
    for (key, (digest, _)) in from {
        match to.get(key) {
            None => d.missing.push(key.clone()),
            Some((other, _)) if other != digest => d.differing.push(key.clone()),
            Some(_) => continue,
        }
        d.observed
            .insert(key.clone(), (from.get(key).cloned(), to.get(key).cloned()));
    }
    for (key, (_, xmin)) in to {
        if !from.contains_key(key) {
            d.extra.push((key.clone(), xmin.clone()));
            d.observed.insert(key.clone(), (None, to.get(key).cloned()));
        }
    }
    d
}

/// The parameters of a `(lower, upper]` range, in the order the range's SQL numbers them.
fn range_values<'a>(
    lower: Option<&'a Key>,
    upper: Option<&'a Key>,
) -> impl Iterator<Item = &'a str> {
    lower.into_iter().chain(upper).flatten().map(String::as_str)
}

fn key_of(json: &str) -> Result<Key, CopyError> {
    serde_json::from_str(json).map_err(|e| CopyError::Plan(format!("decode key {json}: {e}")))
}

impl Copier {
    /// One row of a range statement: the tenant, then the range's key values, bound.
    async fn range_row<T>(
        &self,
        pool: &PgPool,
        sql: &std::sync::Arc<str>,
        tenant: &TenantId,
        lower: Option<&Key>,
        upper: Option<&Key>,
        what: &'static str,
    ) -> Result<T, CopyError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut q = sqlx::query_as::<_, T>(AssertSqlSafe(sql.clone())).bind(tenant.as_str());
        for v in range_values(lower, upper) {
            q = q.bind(v);
        }
        q.fetch_one(pool).await.map_err(|e| CopyError::db(what, e))
    }

    async fn digests(
        &self,
        pool: &PgPool,
        sql: &std::sync::Arc<str>,
        tenant: &TenantId,
        lower: Option<&Key>,
        upper: Option<&Key>,
    ) -> Result<Digests, CopyError> {
        let mut q = sqlx::query_as::<_, (String, String, String)>(AssertSqlSafe(sql.clone()))
            .bind(tenant.as_str());
        for v in range_values(lower, upper) {
            q = q.bind(v);
        }
        let rows = q
            .fetch_all(pool)
            .await
            .map_err(|e| CopyError::db("digest a range", e))?;
        Ok(rows.into_iter().map(|(k, d, x)| (k, (d, x))).collect())
    }

    /// Compares `(lower, upper]` of the tenant on both sides of a copy direction.
    pub async fn compare_range(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        lower: Option<&Key>,
        upper: Option<&Key>,
    ) -> Result<Diff, CopyError> {
        self.compare_range_against(tenant, direction, lower, upper, None)
            .await
    }

    /// [`Copier::compare_range`], taking the source side's digest as `expected` when the
    /// caller knows it (a locked batch computed it as it copied).
    async fn compare_range_against(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        lower: Option<&Key>,
        upper: Option<&Key>,
        expected: Option<Digest>,
    ) -> Result<Diff, CopyError> {
        if self
            .summaries_match(tenant, direction, lower, upper, expected)
            .await?
        {
            return Ok(Diff::default());
        }
        let sql = self.statements(direction);
        let (from, to) = self.pools(direction);
        let i = bounds_index(lower.is_some(), upper.is_some());
        let a = self
            .digests(from, &sql.digests_from[i], tenant, lower, upper)
            .await?;
        let b = self
            .digests(to, &sql.digests_to[i], tenant, lower, upper)
            .await?;
        Ok(diff(&a, &b))
    }

    /// Whether `(lower, upper]` holds the same rows on both sides, by the cheapest summary the
    /// databases allow (`expected` standing for the source's digest when given); if not, the
    /// caller compares row by row.
    async fn summaries_match(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        lower: Option<&Key>,
        upper: Option<&Key>,
        expected: Option<Digest>,
    ) -> Result<bool, CopyError> {
        let sql = self.statements(direction);
        let (from, to) = self.pools(direction);
        let i = bounds_index(lower.is_some(), upper.is_some());
        if self.hashing() {
            // Two index scans and a hash per row: cheaper than a join of both ranges.
            let theirs: Digest = self
                .range_row(
                    to,
                    &sql.digest_to[i],
                    tenant,
                    lower,
                    upper,
                    "digest a range",
                )
                .await?;
            let ours = match expected {
                Some(d) => d,
                None => {
                    self.range_row(
                        from,
                        &sql.digest_from[i],
                        tenant,
                        lower,
                        upper,
                        "digest a range",
                    )
                    .await?
                }
            };
            Ok(ours == theirs)
        } else if self.same_database() {
            // One merge of both ranges in the database: no row leaves it, none is hashed.
            let (differing,): (i64,) = self
                .range_row(
                    from,
                    &sql.differences_local[i],
                    tenant,
                    lower,
                    upper,
                    "compare a range",
                )
                .await?;
            Ok(differing == 0)
        } else {
            let a: (i64, String) = self
                .range_row(
                    from,
                    &sql.checksum_from[i],
                    tenant,
                    lower,
                    upper,
                    "checksum a range",
                )
                .await?;
            let b: (i64, String) = self
                .range_row(
                    to,
                    &sql.checksum_to[i],
                    tenant,
                    lower,
                    upper,
                    "checksum a range",
                )
                .await?;
            Ok(a == b)
        }
    }

    /// Validates a range just copied: equal, or equal on a second look, or repaired, or the
    /// remaining differences recorded as mismatches.
    pub(crate) async fn validate_range(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        lower: Option<&Key>,
        upper: Option<&Key>,
        expected: Option<Digest>,
    ) -> Result<RangeCheck, CopyError> {
        let first = self
            .compare_range_against(tenant, direction, lower, upper, expected)
            .await?;
        if first.is_empty() {
            return Ok(RangeCheck::default());
        }
        let settled = self.writes_in_flight_ended(direction).await?;
        let second = self.compare_range(tenant, direction, lower, upper).await?;
        if second.is_empty() {
            return Ok(RangeCheck::default());
        }
        // A destination-only row is deleted only if both looks saw it identically: one seen
        // by the second look alone may be a dual write that committed between that look's
        // source read and its destination read (the workload checker caught such a delete).
        let extras = settled.then(|| first.intersect(&second).extra);
        let repaired = self
            .repair(tenant, direction, &second, extras.as_deref().unwrap_or(&[]))
            .await?;
        let third = self.compare_range(tenant, direction, lower, upper).await?;
        if third.is_empty() {
            return Ok(RangeCheck {
                repaired,
                mismatches: 0,
            });
        }
        // Only what differs on two looks is a mismatch; a key a writer is changing right now
        // differs on one look and not the next.
        self.writes_in_flight_ended(direction).await?;
        let fourth = self.compare_range(tenant, direction, lower, upper).await?;
        let left = third.intersect(&fourth);
        let mut mismatches = 0;
        let kinds = [
            (&left.missing, "missing in the destination"),
            (&left.differing, "differs between the sides"),
        ];
        for (keys, detail) in kinds {
            for key in keys {
                self.record(tenant, direction, key, detail).await?;
                mismatches += 1;
            }
        }
        for (key, _) in &left.extra {
            self.record(tenant, direction, key, "only in the destination")
                .await?;
            mismatches += 1;
        }
        Ok(RangeCheck {
            repaired,
            mismatches,
        })
    }

    /// Waits until the transactions in progress now have ended, on the source and (across
    /// databases) on the destination; `false` if some are still running after the limit.
    /// Noted after a look, not before it: a write whose transaction began between the note
    /// and the look would otherwise be seen half done and not waited for (one side committed,
    /// the other's half still open), and taken for a difference.
    async fn writes_in_flight_ended(&self, direction: CopyDirection) -> Result<bool, CopyError> {
        let (from, to) = self.pools(direction);
        let pools: &[&PgPool] = if self.same_database() {
            &[from]
        } else {
            &[from, to]
        };
        wait_for_transactions_in_flight(pools, IN_FLIGHT_LIMIT).await
    }

    async fn record(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        key: &str,
        detail: &str,
    ) -> Result<(), CopyError> {
        tracing::warn!(migration = %self.migration, tenant = %tenant, key, detail, "validation mismatch");
        self.store
            .record_mismatch(
                &self.migration,
                tenant,
                key,
                &format!("{} copy: {detail}", direction.as_str()),
            )
            .await?;
        Ok(())
    }

    /// Deletes a destination row (key as a JSON array) only if it is still the version seen
    /// (`xmin`), so a row re-inserted meanwhile survives. Returns the rows deleted (0 or 1).
    async fn delete_if_unchanged(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        key: &str,
        xmin: &str,
    ) -> Result<u64, CopyError> {
        let key = key_of(key)?;
        let (_, to) = self.pools(direction);
        let sql = &self.statements(direction).delete_if_unchanged_to;
        let done = bind_key(
            sqlx::query(AssertSqlSafe(sql.clone())).bind(tenant.as_str()),
            &key,
        )
        .bind(xmin)
        .execute(to)
        .await
        .map_err(|e| CopyError::db("delete a destination-only row", e))?;
        Ok(done.rows_affected())
    }

    /// Re-copies rows missing or differing in the destination (with the version guard: a
    /// newer destination row stays, and is a mismatch), and deletes the destination-only rows
    /// `extras` (key, xmin), each only if still the version observed. The caller passes only
    /// extras that cannot be a write in flight: seen identically on two looks, the first
    /// one's source transactions all ended.
    async fn repair(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
        d: &Diff,
        extras: &[(String, String)],
    ) -> Result<u64, CopyError> {
        let sql = self.statements(direction);
        let (from, to) = self.pools(direction);
        let mut repaired = 0;
        for key in d.missing.iter().chain(&d.differing) {
            let key = key_of(key)?;
            let mut locked = from
                .begin()
                .await
                .map_err(|e| CopyError::db("begin a repair", e))?;
            let rows: Vec<String> = bind_key(
                sqlx::query(AssertSqlSafe(sql.select_key.clone())).bind(tenant.as_str()),
                &key,
            )
            .fetch_all(&mut *locked)
            .await
            .map_err(|e| CopyError::db("read a row to repair", e))?
            .iter()
            .map(|r| sqlx::Row::try_get::<String, _>(r, 0))
            .collect::<Result<_, _>>()
            .map_err(|e| CopyError::db("decode a row to repair", e))?;
            if let Some(row) = rows.first() {
                let done = sqlx::query(AssertSqlSafe(sql.upsert.clone()))
                    .bind(format!("[{row}]"))
                    .execute(to)
                    .await
                    .map_err(|e| CopyError::db("repair a row", e))?;
                tracing::debug!(migration = %self.migration, tenant = %tenant, key = ?key, rows = done.rows_affected(), "repair re-copied a row");
                repaired += done.rows_affected();
            }
            locked
                .commit()
                .await
                .map_err(|e| CopyError::db("end a repair", e))?;
        }
        // Deleting destination-only rows is right only while the copy's source side is the
        // authoritative one (a forced phase change mid-copy could have flipped it).
        let phase = self
            .store
            .tenant(&self.migration, tenant)
            .await?
            .state
            .phase;
        let from_side = match direction {
            CopyDirection::Forward => ferry_domain::Side::Source,
            CopyDirection::Reverse => ferry_domain::Side::Target,
        };
        if phase.authority() != from_side {
            return Ok(repaired);
        }
        for (key, xmin) in extras {
            let deleted = self
                .delete_if_unchanged(tenant, direction, key, xmin)
                .await?;
            tracing::debug!(migration = %self.migration, tenant = %tenant, key, xmin, deleted, "repair deleted a destination-only row");
            repaired += deleted;
        }
        Ok(repaired)
    }

    /// Before a copy starts: rows already in the destination that differ from the source, and
    /// were not put there by dual writes (which write identical rows), are someone else's data.
    /// They stop the copy, unless the operator allowed overwriting: then they are deleted (each
    /// only if still the version observed) and the copy writes the source's rows.
    pub(crate) async fn check_target_conflicts(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
    ) -> Result<(), CopyError> {
        // A reverse copy exists to overwrite the stale source; only a forward copy can find
        // someone else's rows in its destination.
        if direction == CopyDirection::Reverse {
            return Ok(());
        }
        let (_, to) = self.pools(direction);
        let sql = self.statements(direction);
        if self.count(to, &sql.count_to, tenant).await? == 0 {
            return Ok(());
        }
        // Dual writes in flight differ for a moment (source written, target not yet); rows
        // that differ identically on two looks, the second after those writes ended, are not
        // in flight.
        let first = self.compare_range(tenant, direction, None, None).await?;
        self.writes_in_flight_ended(direction).await?;
        let settled = first.intersect(&self.compare_range(tenant, direction, None, None).await?);
        // Rows missing from the destination are what the copy is for; the rest conflict.
        let conflicts: Vec<(&String, &String)> = settled
            .differing
            .iter()
            .chain(settled.extra.iter().map(|(k, _)| k))
            .filter_map(|k| match settled.observed.get(k) {
                Some((_, Some((_, xmin)))) => Some((k, xmin)),
                _ => None,
            })
            .collect();
        if conflicts.is_empty() {
            return Ok(());
        }
        if !self.overwrite_allowed() {
            return Err(CopyError::TargetConflict {
                tenant: tenant.clone(),
                count: conflicts.len() as u64,
            });
        }
        for (key, xmin) in &conflicts {
            self.delete_if_unchanged(tenant, direction, key, xmin)
                .await?;
        }
        tracing::warn!(migration = %self.migration, tenant = %tenant, conflicts = conflicts.len(), "overwrote conflicting destination rows");
        Ok(())
    }

    /// Re-checks a whole tenant, read-only: records what differs, and resolves the tenant's
    /// open mismatches if nothing does.
    pub async fn verify(
        &self,
        tenant: &TenantId,
        direction: CopyDirection,
    ) -> Result<Diff, CopyError> {
        self.plan.check_tenant(tenant)?;
        self.store.tenant(&self.migration, tenant).await?;
        let first = self.compare_range(tenant, direction, None, None).await?;
        if first.is_empty() {
            for (id, _, _) in self.store.open_mismatches(&self.migration, tenant).await? {
                self.store.resolve_mismatch(id).await?;
            }
            return Ok(first);
        }
        // What differs on two looks, the second after the writes in flight at the first ended.
        self.writes_in_flight_ended(direction).await?;
        let d = first.intersect(&self.compare_range(tenant, direction, None, None).await?);
        if d.is_empty() {
            for (id, _, _) in self.store.open_mismatches(&self.migration, tenant).await? {
                self.store.resolve_mismatch(id).await?;
            }
            return Ok(d);
        }
        let open: std::collections::HashSet<String> = self
            .store
            .open_mismatches(&self.migration, tenant)
            .await?
            .into_iter()
            .map(|(_, key, _)| key)
            .collect();
        let all = d
            .missing
            .iter()
            .map(|k| (k, "missing in the destination"))
            .chain(d.differing.iter().map(|k| (k, "differs between the sides")))
            .chain(d.extra.iter().map(|(k, _)| (k, "only in the destination")));
        for (key, detail) in all {
            if !open.contains(key) {
                self.record(tenant, direction, key, detail).await?;
            }
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests(rows: &[(&str, &str)]) -> Digests {
        rows.iter()
            .map(|(k, d)| ((*k).to_owned(), ((*d).to_owned(), "7".to_owned())))
            .collect()
    }

    #[test]
    fn only_differences_seen_identically_twice_are_settled() {
        let from = digests(&[("[\"1\"]", "a"), ("[\"2\"]", "b")]);
        let first = diff(&from, &digests(&[("[\"1\"]", "x"), ("[\"2\"]", "y")]));
        // Key 1 still holds x (settled); key 2 moved on to z (a write in flight).
        let second = diff(&from, &digests(&[("[\"1\"]", "x"), ("[\"2\"]", "z")]));
        let settled = first.intersect(&second);
        assert_eq!(settled.differing, ["[\"1\"]"]);
        assert!(settled.missing.is_empty() && settled.extra.is_empty());
    }

    #[test]
    fn diff_sorts_rows_into_missing_extra_and_differing() {
        let from = digests(&[("[\"1\"]", "a"), ("[\"2\"]", "b"), ("[\"3\"]", "c")]);
        let to = digests(&[("[\"2\"]", "b"), ("[\"3\"]", "x"), ("[\"4\"]", "d")]);
        let d = diff(&from, &to);
        assert_eq!(d.missing, ["[\"1\"]"]);
        assert_eq!(d.differing, ["[\"3\"]"]);
        assert_eq!(d.extra, [("[\"4\"]".to_owned(), "7".to_owned())]);
        assert!(diff(&from, &from).is_empty());
    }
}
