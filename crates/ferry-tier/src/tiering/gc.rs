//! Garbage collection: the only place segment objects are deleted. It runs apart from the
//! work that retires or orphans them, so a crash between a manifest commit and a delete
//! leaves garbage to collect later, never a live segment without its object.

use std::time::Duration;

use crate::cold::ColdStore;
use crate::error::TierError;

use super::{Tiering, err_store};

impl Tiering {
    /// Deletes the objects of retired segments and of reservations older than `stale`, then
    /// forgets them. Returns how many were collected.
    pub async fn collect_garbage(&self, stale: Duration) -> Result<u64, TierError> {
        let garbage = self
            .store
            .garbage_segments(&self.migration, stale)
            .await
            .map_err(err_store)?;
        for g in &garbage {
            if !g.path.is_empty() {
                self.cold.delete(&Self::path(g)).await?;
            } else {
                // A reservation that never got its path recorded: its object, if any, has
                // the name Ferry gives it.
                self.cold
                    .delete(&ColdStore::segment_path(&self.migration, &g.tenant, g.id))
                    .await?;
            }
            self.store.forget_segment(g.id).await.map_err(err_store)?;
        }
        Ok(garbage.len() as u64)
    }
}
