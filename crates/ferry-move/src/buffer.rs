//! The tenant move's buffer worker: applies the changes a non-authoritative side missed.
//!
//! A two-sided write whose second half fails parks that half in the update buffer, and the
//! buffer-drained guard holds the tenant's authority flips until it is applied. A router's own
//! next write of the key applies it too (`key_lock.rs`), but a key nobody writes again needs
//! this worker. It applies each key's changes for a side in order, in one transaction on that
//! side, under the same key lock the routers' writes hold, so it never interleaves with a
//! write of the key; upserts keep the version guard. A change whose statement fails counts an
//! attempt and, after `buffer.dead_after` of them, is parked as dead (and later changes of its
//! key wait behind it); a side that cannot be reached counts nothing: the change is not at
//! fault, and is tried again on the next pass.

use std::collections::HashSet;
use std::sync::Arc;

use ferry_copier::TenantMoveConfig;
use ferry_copier::plan::TablePlan;
use ferry_domain::{MigrationId, Side, TenantId};
use ferry_store::{BufferedUpdate, ControlStore, MigrationKind};
use sqlx::PgPool;

use crate::key_lock::{apply_changes, lock_key, side_of};
use crate::table::{Key, MoveError, index};

/// Applies a tenant move's update buffer; needs no router.
pub struct MoveBuffer {
    store: Arc<dyn ControlStore>,
    migration: MigrationId,
    /// Per side (source, target): `[delete, upsert]` of one row.
    statements: [[Arc<str>; 2]; 2],
    source: PgPool,
    target: PgPool,
    dead_after: i32,
}

/// What one pass did for a tenant.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BufferPass {
    /// Changes applied (and marked so).
    pub applied: u64,
    /// Changes whose statement failed (an attempt counted on each).
    pub failed: u64,
    /// Changes left for a side that could not be reached (nothing counted).
    pub unreachable: u64,
    /// The last error met, for the operator.
    pub last_error: Option<String>,
}

impl MoveBuffer {
    pub async fn open(
        store: Arc<dyn ControlStore>,
        migration: &MigrationId,
        source: PgPool,
        target: PgPool,
    ) -> Result<MoveBuffer, MoveError> {
        let record = store.migration(migration).await?;
        if record.kind != MigrationKind::TenantMove {
            return Err(MoveError::NotATenantMove {
                migration: migration.clone(),
                kind: record.kind.as_str(),
            });
        }
        let config =
            TenantMoveConfig::from_json(&record.config).map_err(ferry_copier::CopyError::from)?;
        let names = config.names().map_err(ferry_copier::CopyError::from)?;
        let plan = TablePlan::load(&names, &source, &target, false).await?;
        let of = |t: &ferry_copier::plan::Table| -> [Arc<str>; 2] {
            [plan.delete_row(t).into(), plan.upsert(t).into()]
        };
        Ok(MoveBuffer {
            statements: [of(&plan.source), of(&plan.target)],
            store,
            migration: migration.clone(),
            source,
            target,
            dead_after: config.buffer.dead_after,
        })
    }

    /// One pass over the tenant's pending changes, key by key and side by side.
    pub async fn apply(&self, tenant: &TenantId) -> Result<BufferPass, MoveError> {
        let open = self.store.pending_updates(&self.migration, tenant).await?;
        // A dead change waits for an operator; later changes of its key wait behind it.
        let dead: HashSet<&str> = open
            .iter()
            .filter(|u| u.state == "dead")
            .map(|u| u.key.as_str())
            .collect();
        let mut groups: Vec<(&str, Side)> = Vec::new();
        for u in &open {
            let Some(side) = side_of(&u.operation) else {
                continue;
            };
            if u.state == "pending"
                && !dead.contains(u.key.as_str())
                && !groups.contains(&(u.key.as_str(), side))
            {
                groups.push((u.key.as_str(), side));
            }
        }
        let mut pass = BufferPass::default();
        for (key, side) in groups {
            let changes: Vec<&BufferedUpdate> = open
                .iter()
                .filter(|u| u.key == key && side_of(&u.operation) == Some(side))
                .collect();
            match self.apply_key(tenant, key, side).await {
                Ok(applied) => pass.applied += applied,
                Err(KeyFailure::Store(e)) => return Err(e.into()),
                Err(KeyFailure::Unreachable(e)) => {
                    pass.unreachable += changes.len() as u64;
                    pass.last_error = Some(e.to_string());
                }
                Err(KeyFailure::Refused(e)) => {
                    let seqs: Vec<i64> = changes.iter().map(|u| u.seq).collect();
                    self.store
                        .record_update_failure(&seqs, &e.to_string(), self.dead_after)
                        .await?;
                    pass.failed += seqs.len() as u64;
                    pass.last_error = Some(e.to_string());
                }
            }
        }
        if pass.applied + pass.failed + pass.unreachable > 0 {
            tracing::info!(migration = %self.migration, tenant = %tenant, applied = pass.applied, failed = pass.failed, unreachable = pass.unreachable, "update buffer pass");
        }
        Ok(pass)
    }

    /// Applies the key's pending changes for `side` under the key's lock (read again under
    /// it: a router's write may have applied them meanwhile); returns how many.
    async fn apply_key(&self, tenant: &TenantId, key: &str, side: Side) -> Result<u64, KeyFailure> {
        let values: Key = serde_json::from_str(key).map_err(|e| {
            KeyFailure::Refused(sqlx::Error::Decode(
                format!("buffered key {key} is not a JSON array of strings: {e}").into(),
            ))
        })?;
        let mut lock = self.source.begin().await.map_err(KeyFailure::reaching)?;
        lock_key(&self.migration, tenant, &values, &mut lock)
            .await
            .map_err(KeyFailure::reaching)?;
        let changes: Vec<BufferedUpdate> = self
            .store
            .pending_updates(&self.migration, tenant)
            .await
            .map_err(KeyFailure::Store)?
            .into_iter()
            .filter(|u| u.state == "pending" && u.key == key && side_of(&u.operation) == Some(side))
            .collect();
        if changes.is_empty() {
            return Ok(0);
        }
        let [delete, upsert] = &self.statements[index(side)];
        let (delete, upsert) = (&**delete, &**upsert);
        match side {
            Side::Source => {
                apply_changes([delete, upsert], tenant, &values, &changes, &mut lock)
                    .await
                    .map_err(KeyFailure::applying)?;
                lock.commit().await.map_err(KeyFailure::applying)?;
            }
            Side::Target => {
                let mut tx = self.target.begin().await.map_err(KeyFailure::reaching)?;
                apply_changes([delete, upsert], tenant, &values, &changes, &mut tx)
                    .await
                    .map_err(KeyFailure::applying)?;
                // A deferred constraint refuses at COMMIT: the change's fault.
                tx.commit().await.map_err(KeyFailure::applying)?;
                lock.commit().await.map_err(KeyFailure::reaching)?;
            }
        }
        for change in &changes {
            self.store
                .mark_update_applied(change.seq)
                .await
                .map_err(KeyFailure::Store)?;
        }
        Ok(changes.len() as u64)
    }
}

/// Why a key's changes were not applied: its side (or the lock's) could not be reached, a
/// statement of the changes was refused, or the control store failed.
enum KeyFailure {
    Unreachable(sqlx::Error),
    Refused(sqlx::Error),
    Store(ferry_store::StoreError),
}

impl KeyFailure {
    fn reaching(e: sqlx::Error) -> KeyFailure {
        KeyFailure::Unreachable(e)
    }

    /// A statement's error: the change's fault unless the connection failed under it.
    fn applying(e: sqlx::Error) -> KeyFailure {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => KeyFailure::Unreachable(e),
            sqlx::Error::Database(d)
                if d.code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")) =>
            {
                KeyFailure::Unreachable(e)
            }
            _ => KeyFailure::Refused(e),
        }
    }
}
