//! A two-sided write whose authoritative COMMIT lost its answer.
//!
//! The connection dropped after COMMIT was sent: the server may have committed or not, and
//! that session cannot be asked any more. Rolling the other side back, as for a refused
//! COMMIT, leaves the sides apart when it did commit, and the next authority flip then loses
//! the write or brings a deleted row back (a fault episode of the workload found this). So
//! the request fails as of unknown outcome (in a phase that writes one side only too, where
//! there is nothing else to do), and before that:
//!
//! 1. the key is recorded as a mismatch, durably: no phase change passes it until
//!    `ferry verify` finds the sides equal;
//! 2. the key is brought level: under its lock, in a fresh transaction, whatever the
//!    authoritative side holds for it now (a row, or none) is written to the other side with
//!    the version guard, so `ferry verify` normally finds nothing left to fix.

use std::sync::atomic::Ordering;

use ferry_domain::{Side, TenantId};
use sqlx::AssertSqlSafe;

use crate::key_lock::key_text;
use crate::route::RouteDecision;
use crate::table::{Key, MoveError, MovedTable, index};
use crate::write::{OtherSide, PairError};

/// How long a write whose COMMIT lost its answer waits for that COMMIT to land.
const LANDING_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Whether a failed COMMIT may nevertheless have committed: the connection failed, or the
/// server ended the session (SQLSTATE classes 08 and 57). Any other error from the server is
/// its refusal, and nothing was committed.
pub(crate) fn outcome_unknown(cause: &sqlx::Error) -> bool {
    match cause {
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

impl MovedTable {
    /// Records the key as a mismatch, brings it level and returns the request's error.
    pub(crate) async fn commit_unknown(
        &self,
        tenant: &TenantId,
        first: Side,
        other: OtherSide,
        cause: sqlx::Error,
    ) -> MoveError {
        self.stats.commits_unknown.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(migration = %self.migration, tenant = %tenant, side = %first, "an authoritative COMMIT lost its answer: {cause}");
        // Its key lock (when the target is authoritative) is held in this transaction.
        if let Ok(tx) = other.written {
            let _ = tx.rollback().await;
        }
        let recorded = self
            .store
            .record_mismatch(
                &self.migration,
                tenant,
                &key_text(&other.key),
                &format!(
                    "{first} COMMIT lost its answer: the write may or may not have taken effect"
                ),
            )
            .await;
        // A COMMIT cut off by a reset may still be landing, and an insert it makes is not
        // visible (nor waited for by FOR UPDATE) until it has: wait until every transaction in
        // progress on that side now has ended, so the key is levelled from the final outcome.
        let side = [self.pool(first)];
        match ferry_copier::wait_for_transactions_in_flight(&side, LANDING_LIMIT).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(migration = %self.migration, tenant = %tenant, "transactions still in progress after {LANDING_LIMIT:?}; levelling the key anyway")
            }
            Err(e) => {
                tracing::warn!(migration = %self.migration, tenant = %tenant, "could not wait for the lost COMMIT to land: {e}")
            }
        }
        let levelled = match self.resync(tenant, &other.key).await {
            Ok(()) => "the other side was brought to what the authoritative side holds",
            Err(e) => {
                tracing::warn!(migration = %self.migration, tenant = %tenant, "bringing a key level after a lost COMMIT answer failed: {e}");
                "bringing the other side level failed (the sides may differ)"
            }
        };
        let settled = match recorded {
            Ok(_) => format!(
                "{levelled}, and the key is recorded as a mismatch: the next phase change waits for `ferry verify` to find the sides equal"
            ),
            Err(e) => format!(
                "{levelled}, but the key could not be recorded as a mismatch ({e}): run `ferry verify` for this tenant before its next phase change"
            ),
        };
        MoveError::CommitUnknown {
            side: first,
            table: self.table(first),
            cause,
            settled,
        }
    }

    /// The COMMIT of a write to the only side written in this phase lost its answer: the
    /// request fails as of unknown outcome too (it may have committed), with nothing to level.
    pub(crate) fn one_side_unknown(
        &self,
        tenant: &TenantId,
        side: Side,
        cause: sqlx::Error,
    ) -> MoveError {
        self.stats.commits_unknown.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(migration = %self.migration, tenant = %tenant, side = %side, "a COMMIT lost its answer: {cause}");
        MoveError::CommitUnknown {
            side,
            table: self.table(side),
            cause,
            settled: "only this side is written in the tenant's phase, so there is nothing to bring level".into(),
        }
    }

    /// Writes what the authoritative side holds for `key` now (a row, or none) to the other
    /// side, under the key's lock, by the tenant's current phase.
    async fn resync(&self, tenant: &TenantId, key: &Key) -> Result<(), MoveError> {
        let snapshot = self.router.snapshot()?;
        let phase = snapshot
            .phase(self.migration.as_str(), tenant.as_str())
            .phase;
        let (first, then) = RouteDecision::write(phase).write_sides();
        let Some(second) = then else {
            // One side is written now: there is no other side to keep level.
            return Ok(());
        };
        let (mut tx, mut serialized) = self.serialize(tenant, key, first, then).await?;
        self.lock_timeout(first, &mut tx).await?;
        // FOR UPDATE: the key's writers wait behind this levelling.
        let sql = format!("{} FOR UPDATE", self.select[index(first)]);
        let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(tenant.as_str());
        for v in key {
            q = q.bind(v.as_str());
        }
        let image = q
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.write_error(first))?;
        let pre = serialized.second.take();
        let other = match image {
            Some(image) => self.mirror(second, tenant, &image, pre).await?,
            None => {
                if self.lock_deletes && ferry_copier::tenant_lock::guards_deletes(phase, first) {
                    ferry_copier::tenant_lock::take(&mut tx, &self.migration, tenant, false)
                        .await
                        .map_err(self.write_error(first))?;
                }
                self.delete_other(second, tenant, key, pre).await
            }
        };
        let committed = self
            .commit_pair(first, tx, Some(other), serialized, tenant)
            .await;
        drop(snapshot);
        match committed {
            Ok(()) => Ok(()),
            Err(PairError::Failed(e)) => Err(e),
            // The key is recorded as a mismatch already; `ferry verify` settles it.
            Err(PairError::Unknown(other, cause)) => {
                if let Ok(tx) = other.written {
                    let _ = tx.rollback().await;
                }
                Err(self.write_error(first)(cause))
            }
        }
    }
}
