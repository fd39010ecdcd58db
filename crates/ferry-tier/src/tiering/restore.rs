//! The way back: after a rollback the hot table must hold every row again before the tenant
//! reaches a phase that reads hot alone. `restore` writes the archived rows back in
//! `target_primary`; `reset` forgets the cold tier once the tenant is back in `legacy`.

use std::collections::BTreeMap;

use ferry_domain::TenantId;
use ferry_store::{CopyDirection, SegmentCommit};

use crate::error::TierError;

use super::{Tiering, err_store, key_text};

impl Tiering {
    /// The reverse copy, in `target_primary` after a rollback from `target_only`: every
    /// archived row (pending changes applied first) is written back over the hot table, and
    /// the reverse sync recorded complete (the guard on `target_primary -> shadow`).
    ///
    /// It holds the applier lock throughout: a buffer worker applying changes between the
    /// read of a segment and the read of the pending changes would leave neither with them,
    /// and the segment's older image would overwrite the hot copy a writer had brought up to
    /// date (an acknowledged write lost once hot is authoritative again).
    pub async fn restore(&self, tenant: &TenantId) -> Result<u64, TierError> {
        self.decl().check_tenant(tenant)?;
        let epoch = self.store.tenant(&self.migration, tenant).await?.copy_epoch;
        let applier = self.lock_applier(tenant).await?;
        self.apply_locked(tenant).await?;
        let segments = self.segments(tenant).await?;
        let mut restored = 0;
        for s in &segments {
            for b in self.cold.read_checked(self.decl(), &Self::path(s)).await? {
                let mut images: BTreeMap<String, String> = self
                    .batch_images(&b)
                    .into_iter()
                    .map(|(key, json)| (key_text(&key), json))
                    .collect();
                // Under the tenant's lock (writers mirror into hot under it too), with the
                // changes buffered until now merged in: a writer is either in these images
                // or writes its own after them.
                let mut tx = self.lock_tenant(tenant, true).await?;
                let mut deleted = Vec::new();
                for u in self.pending(tenant).await? {
                    if let Some(image) = images.get_mut(&u.key) {
                        if u.operation == "delete" {
                            deleted.push(u.key.clone());
                        } else {
                            *image = u.payload.to_string();
                        }
                    }
                }
                for k in &deleted {
                    images.remove(k);
                }
                let json = format!(
                    "[{}]",
                    images.values().cloned().collect::<Vec<_>>().join(",")
                );
                restored += self.hot.upsert_json_in(&mut tx, &json).await?;
                tx.commit()
                    .await
                    .map_err(|e| TierError::db("commit a restore", e))?;
            }
        }
        self.record_complete(tenant, CopyDirection::Reverse, restored, epoch)
            .await?;
        applier
            .commit()
            .await
            .map_err(|e| TierError::db("release the applier lock", e))?;
        Ok(restored)
    }

    /// After a rollback to `legacy` the hot table is complete and alone authoritative (the
    /// way back went through a restore): the tenant's segments are retired, its buffered
    /// changes dropped, and its watermark reset, so a new advance archives afresh instead of
    /// trusting segments that writes in `legacy` never reached. Returns the segments retired.
    pub async fn reset(&self, tenant: &TenantId) -> Result<u64, TierError> {
        self.decl().check_tenant(tenant)?;
        let lock = self.lock_tenant(tenant, true).await?;
        let segments = self.segments(tenant).await?;
        for u in self.pending(tenant).await? {
            self.store
                .drop_update(u.seq, "dropped: the tenant was rolled back to legacy")
                .await
                .map_err(err_store)?;
        }
        self.commit(
            tenant,
            &SegmentCommit {
                retire: segments.iter().map(|s| s.id).collect(),
                archived_through: Some("-infinity".into()),
                ..SegmentCommit::default()
            },
        )
        .await?;
        lock.commit()
            .await
            .map_err(|e| TierError::db("release the tenant lock", e))?;
        Ok(segments.len() as u64)
    }
}
