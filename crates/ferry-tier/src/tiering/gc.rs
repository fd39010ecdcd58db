//! Garbage collection: the only place segment objects are deleted. It runs apart from the
//! work that retires or orphans them, so a crash between a manifest commit and a delete
//! leaves garbage to collect later, never a live segment without its object. Each candidate
//! is claimed in the manifest (forgotten, which a live segment never is) before its object
//! goes, so a long archive that commits its reservation while the collector runs keeps its
//! object (item 11 of the review: the object used to go first). A crash between the claim
//! and the delete leaves an object no manifest row names: storage leaked, nothing lost.

use std::time::Duration;

use crate::cold::ColdStore;
use crate::error::TierError;

use super::{Tiering, err_store};

impl Tiering {
    /// Forgets retired segments and reservations older than `stale`, then deletes their
    /// objects. Returns how many were collected.
    pub async fn collect_garbage(&self, stale: Duration) -> Result<u64, TierError> {
        let garbage = self
            .store
            .garbage_segments(&self.migration, stale)
            .await
            .map_err(err_store)?;
        let mut collected = 0;
        for g in &garbage {
            if !self.store.forget_segment(g.id).await.map_err(err_store)? {
                // Committed since it was listed: live now, its object stays.
                continue;
            }
            collected += 1;
            if !g.path.is_empty() {
                self.cold.delete(&Self::path(g)).await?;
            } else {
                // A reservation that never got its path recorded: its object, if any, has
                // the name Ferry gives it.
                self.cold
                    .delete(&ColdStore::segment_path(&self.migration, &g.tenant, g.id))
                    .await?;
            }
        }
        Ok(collected)
    }
}
