//! Reading the cold tier for the application: archived rows with the pending buffered changes
//! merged in, since a change is acknowledged once it is in the buffer, before any segment
//! holds it.

use std::collections::BTreeMap;

use ferry_domain::TenantId;

use crate::error::TierError;
use crate::hot::Row;
use crate::key::RowKey;

use super::{Tiering, key_text};

/// What the cold tier says about a key.
#[derive(Debug, Clone, PartialEq)]
pub enum ColdAnswer {
    /// Not in the cold tier: the hot table is the only place it can be.
    NotArchived,
    /// Archived; `None` if a buffered delete removed it.
    Archived(Option<Row>),
}

impl Tiering {
    /// The cold tier's answer for a key, pending buffered changes merged in (the last one
    /// wins). Pending changes are read before the manifest: a buffer worker committing in
    /// between then shows its changes twice (harmless: they are whole row images), never not
    /// at all.
    pub async fn cold_get(&self, tenant: &TenantId, key: &RowKey) -> Result<ColdAnswer, TierError> {
        let wanted = key_text(key);
        let pending = self.pending(tenant).await?;
        if let Some(last) = pending.iter().rev().find(|u| u.key == wanted) {
            return Ok(ColdAnswer::Archived(match last.operation.as_str() {
                "delete" => None,
                _ => Some(self.hot.normalize_json(&last.payload.to_string()).await?),
            }));
        }
        for attempt in 0..2 {
            let segments = self.segments(tenant).await?;
            let mut missing = false;
            for s in &segments {
                if !self.covers(s, key)? {
                    continue;
                }
                match self.cold.lookup(self.decl(), &Self::path(s), key).await {
                    Ok(Some(batch)) => {
                        return Ok(ColdAnswer::Archived(Some(
                            self.hot.normalize(&batch, 0).await?,
                        )));
                    }
                    Ok(None) => {}
                    // Retired and collected under a reader that had the old manifest.
                    Err(e) if attempt == 0 && is_not_found(&e) => missing = true,
                    Err(e) => return Err(e),
                }
            }
            if !missing {
                break;
            }
        }
        Ok(ColdAnswer::NotArchived)
    }

    /// The tenant's archived rows with `from <= key <= to`, pending changes merged in, by key:
    /// `key -> Some(row image JSON)`, or `None` for a buffered delete. Segments whose key
    /// range misses the bounds are not read.
    pub async fn cold_scan(
        &self,
        tenant: &TenantId,
        from: Option<&RowKey>,
        to: Option<&RowKey>,
    ) -> Result<BTreeMap<RowKey, Option<String>>, TierError> {
        let inside = |k: &RowKey| from.is_none_or(|f| k >= f) && to.is_none_or(|t| k <= t);
        let pending = self.pending(tenant).await?;
        let segments = self.segments(tenant).await?;
        let mut rows: BTreeMap<RowKey, Option<String>> = BTreeMap::new();
        for s in &segments {
            let (lo, hi) = (
                self.parse_stored_key(&s.min_key)?,
                self.parse_stored_key(&s.max_key)?,
            );
            if from.is_some_and(|f| hi < *f) || to.is_some_and(|t| lo > *t) {
                continue;
            }
            for batch in self.cold.read_checked(self.decl(), &Self::path(s)).await? {
                for (key, json) in self.batch_images(&batch) {
                    if inside(&key) {
                        rows.insert(key, Some(json));
                    }
                }
            }
        }
        for u in pending {
            let key = self.parse_stored_key(&u.key)?;
            if inside(&key) {
                let image = (u.operation != "delete").then(|| u.payload.to_string());
                rows.insert(key, image);
            }
        }
        Ok(rows)
    }
}

fn is_not_found(e: &TierError) -> bool {
    match e {
        TierError::ObjectStore { cause, .. } => {
            matches!(cause, object_store::Error::NotFound { .. })
        }
        TierError::Segment { detail, .. } => {
            detail.contains("not found") || detail.contains("NotFound")
        }
        _ => false,
    }
}
