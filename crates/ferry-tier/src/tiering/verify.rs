//! Re-checking the keys shadow reads found different between the tiers.
//!
//! A shadow read that sees hot and cold disagree records a mismatch, and an open mismatch
//! holds the tenant back from `target_primary`. Each `ferry tier run` pass re-reads every such
//! key under its write lock: equal tiers resolve it (a write between the shadow read's two
//! reads also looks like a difference once); a real difference is repaired from the
//! authoritative tier (hot up to `shadow`, through the buffer; the cold tier from
//! `target_primary` on, into the hot copy) and left open until a later pass sees it equal.

use ferry_domain::{Phase, TenantId};

use crate::error::TierError;
use crate::hot::Row;

use super::{ColdAnswer, Tiering};

/// What a re-check pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recheck {
    pub resolved: u64,
    pub repaired: u64,
}

impl Tiering {
    /// Re-checks the tenant's open mismatches (see the module doc).
    pub async fn recheck_mismatches(
        &self,
        tenant: &TenantId,
        phase: Phase,
    ) -> Result<Recheck, TierError> {
        self.decl().check_tenant(tenant)?;
        let mut done = Recheck::default();
        for (id, key_text, _) in self.store.open_mismatches(&self.migration, tenant).await? {
            let key = self.parse_stored_key(&key_text)?;
            let mut lock = self.lock_tenant(tenant, false).await?;
            self.lock_key(&mut lock, tenant, &key).await?;
            let hot = self.hot.get(tenant, &key).await?;
            let cold = match self.cold_get(tenant, &key).await? {
                ColdAnswer::Archived(row) => row,
                // Not archived (or archived and deleted): hot alone holds the key.
                _ => hot.clone(),
            };
            if hot == cold {
                self.store.resolve_mismatch(id).await?;
                done.resolved += 1;
            } else if matches!(phase, Phase::Legacy | Phase::DualWrite | Phase::Shadow) {
                self.repair_cold(tenant, &key_text, hot.as_ref()).await?;
                done.repaired += 1;
            } else {
                self.hot
                    .mirror(&mut lock, tenant, &key, cold.as_ref())
                    .await?;
                done.repaired += 1;
            }
            lock.commit()
                .await
                .map_err(|e| TierError::db("release the key lock", e))?;
        }
        Ok(done)
    }

    /// Sends the hot table's row (or its absence) to the cold tier through the buffer.
    async fn repair_cold(
        &self,
        tenant: &TenantId,
        key: &str,
        hot: Option<&Row>,
    ) -> Result<(), TierError> {
        let (operation, payload) = match hot {
            Some(row) => ("upsert", serde_json::Value::Object(row.clone())),
            None => ("delete", serde_json::Value::Null),
        };
        self.store
            .enqueue_update(&self.migration, tenant, key, operation, &payload)
            .await?;
        Ok(())
    }
}
