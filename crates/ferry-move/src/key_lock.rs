//! One writer per key across every router, and no write built on a stale side.
//!
//! While a tenant is written on both sides (`dual_write` to `target_primary`), routers one
//! phase apart write the sides in opposite orders. Left alone, two writes of one key can then
//! interleave: two inserts each succeed on one side (their second halves time out and go to
//! the buffer), or a write built on the side that missed a buffered change overwrites that
//! change on both sides for good (item 4 of the review). So every two-sided write first takes
//! the key's lock (a transaction-level advisory lock in the source database, which exists in
//! all of those phases) and holds it until both halves are committed; under it, the changes
//! the buffer still holds for the key are applied to each side before the write touches it
//! (they are older than the write, so they go first), and marked applied once that side has
//! committed. A read served by one side merges what the buffer holds for it, so a client
//! reads its acknowledged write even when the side serving it has not received it yet.

use ferry_domain::{MigrationId, Side, TenantId};
use ferry_store::{BufferedUpdate, CopyDirection};
use sqlx::{AssertSqlSafe, Postgres, Transaction};

use crate::table::{Key, MoveError, MovedTable, Row, index};

type Tx = Transaction<'static, Postgres>;

/// The buffer's name for the side a change is for: `upsert:forward` goes to the target.
pub(crate) fn side_of(operation: &str) -> Option<Side> {
    match operation.rsplit_once(':')?.1 {
        d if d == CopyDirection::Forward.as_str() => Some(Side::Target),
        d if d == CopyDirection::Reverse.as_str() => Some(Side::Source),
        _ => None,
    }
}

/// Takes the lock every writer of `key` holds while both sides are written (see the module
/// doc), in `tx`, a transaction on the source, until it ends.
pub(crate) async fn lock_key(
    migration: &MigrationId,
    tenant: &TenantId,
    key: &Key,
    tx: &mut Tx,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("ferry:move:{migration}:{tenant}:{}", key_text(key)))
        .execute(&mut **tx)
        .await
        .map(|_| ())
}

/// Applies buffered `changes` of `key`, oldest first, with a side's `[delete, upsert]`
/// statements in `tx`. Upserts are version-guarded, so an older image never overwrites a
/// newer row.
pub(crate) async fn apply_changes(
    [delete, upsert]: [&str; 2],
    tenant: &TenantId,
    key: &Key,
    changes: &[BufferedUpdate],
    tx: &mut Tx,
) -> Result<(), sqlx::Error> {
    for change in changes {
        if change.operation.starts_with("delete") {
            let mut q = sqlx::query(AssertSqlSafe(delete.to_owned())).bind(tenant.as_str());
            for v in key {
                q = q.bind(v.as_str());
            }
            q.execute(&mut **tx).await?;
        } else {
            sqlx::query(AssertSqlSafe(upsert.to_owned()))
                .bind(format!("[{}]", change.payload))
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// The buffer's key text of a key (a JSON array of its values).
pub(crate) fn key_text(key: &Key) -> String {
    serde_json::Value::from(key.clone()).to_string()
}

impl MovedTable {
    /// Takes the key's lock in `tx`, a transaction on the source, held until it ends (see
    /// the module doc). Taken before `lock_timeout` is set on it: waiting for the key's
    /// previous writer is the point.
    pub(crate) async fn lock_key(
        &self,
        tenant: &TenantId,
        key: &Key,
        tx: &mut Tx,
    ) -> Result<(), MoveError> {
        lock_key(&self.migration, tenant, key, tx)
            .await
            .map_err(self.write_error(Side::Source))
    }

    /// The changes the buffer holds for `key` on `side`, oldest first (dead ones too: they
    /// were acknowledged all the same).
    pub(crate) async fn buffered_for(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
    ) -> Result<Vec<BufferedUpdate>, MoveError> {
        let key = key_text(key);
        Ok(self
            .store
            .pending_updates(&self.migration, tenant)
            .await?
            .into_iter()
            .filter(|u| u.key == key && side_of(&u.operation) == Some(side))
            .collect())
    }

    /// Applies the buffer's changes for `key` on `side` in that side's write transaction,
    /// before the write itself; returns their sequence numbers, to mark applied once the
    /// transaction has committed. Upserts are version-guarded, so an older image never
    /// overwrites a newer row.
    pub(crate) async fn catch_up(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
        tx: &mut Tx,
    ) -> Result<Vec<i64>, MoveError> {
        let changes = self.buffered_for(side, tenant, key).await?;
        let statements = [&*self.delete[index(side)], &*self.upsert[index(side)]];
        apply_changes(statements, tenant, key, &changes, tx)
            .await
            .map_err(self.write_error(side))?;
        Ok(changes.iter().map(|c| c.seq).collect())
    }

    /// Marks buffered changes applied (their side committed them).
    pub(crate) async fn mark_applied(&self, seqs: &[i64]) -> Result<(), MoveError> {
        for seq in seqs {
            self.store.mark_update_applied(*seq).await?;
        }
        Ok(())
    }

    /// A row read from `side`, with the changes the buffer still holds for it merged in:
    /// the last one decides (an upsert's image, or nothing after a delete).
    pub(crate) async fn merge_buffered(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
        read: Option<Row>,
    ) -> Result<Option<Row>, MoveError> {
        let changes = self.buffered_for(side, tenant, key).await?;
        Ok(match changes.last() {
            None => read,
            Some(c) if c.operation.starts_with("delete") => None,
            Some(c) => match &c.payload {
                serde_json::Value::Object(row) => Some(row.clone()),
                _ => read,
            },
        })
    }
}
