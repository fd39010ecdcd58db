//! The read paths: a key or a key range, answered by hot up to `shadow` (the cold tier only
//! compared) and by the cold tier for archived keys from `target_primary` on, where only
//! `target_primary` may fall back to hot when the cold tier fails.

use std::collections::BTreeMap;

use ferry_domain::{Phase, TenantId};

use crate::hot::Row;
use crate::key::RowKey;
use crate::tiering::{ColdAnswer, key_text};

use super::{TableError, TierPath, TierReason, TierRoute, TieredTable, bump};

impl TieredTable {
    /// Reads one row by key.
    pub async fn get(&self, tenant: &TenantId, key: &[&str]) -> Result<Option<Row>, TableError> {
        let key = self.tiering.parse_key(key)?;
        let (snapshot, phase) = self.phase(tenant)?;
        let row = self.read(tenant, &key, phase).await;
        drop(snapshot);
        row
    }

    async fn read(
        &self,
        tenant: &TenantId,
        key: &RowKey,
        phase: Phase,
    ) -> Result<Option<Row>, TableError> {
        let t = &self.tiering;
        match phase {
            Phase::Legacy | Phase::DualWrite | Phase::Shadow => {
                self.route(
                    tenant,
                    "get",
                    TierRoute {
                        path: TierPath::Hot,
                        reason: TierReason::Phase(phase),
                    },
                );
                bump(&self.stats.reads_hot);
                let hot = t.hot.get(tenant, key).await?;
                if phase != Phase::Shadow {
                    return Ok(hot);
                }
                // Shadow: compare, never answer from it, never fail the request for it.
                match t.cold_get(tenant, key).await {
                    Ok(ColdAnswer::Archived(Some(cold))) if Some(&cold) != hot.as_ref() => {
                        bump(&self.stats.shadow_mismatches);
                        tracing::warn!(migration = %self.migration(), tenant = %tenant, key = %key_text(key), "shadow read differs between hot and cold");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(migration = %self.migration(), tenant = %tenant, "shadow cold read failed: {e}")
                    }
                }
                Ok(hot)
            }
            // The cold tier answers for archived keys; hot for the rest (never archived,
            // or archived and deleted: only hot can hold such a key now).
            Phase::TargetPrimary | Phase::TargetOnly | Phase::Complete => {
                let (path, reason, answer) = match t.cold_get(tenant, key).await {
                    Ok(ColdAnswer::Archived(Some(row))) => {
                        (TierPath::Cold, TierReason::Archived(phase), Some(row))
                    }
                    Ok(_) => (TierPath::Hot, TierReason::Phase(phase), None),
                    Err(e) if phase == Phase::TargetPrimary => {
                        bump(&self.stats.fallbacks);
                        tracing::warn!(migration = %self.migration(), tenant = %tenant, "cold read failed, answering from hot: {e}");
                        (TierPath::Hot, TierReason::Fallback(phase), None)
                    }
                    Err(cause) => {
                        return Err(self.cold_unavailable(tenant, key_text(key), phase, cause));
                    }
                };
                self.route(tenant, "get", TierRoute { path, reason });
                match answer {
                    Some(row) => {
                        bump(&self.stats.reads_cold);
                        Ok(Some(row))
                    }
                    None => {
                        bump(&self.stats.reads_hot);
                        Ok(t.hot.get(tenant, key).await?)
                    }
                }
            }
        }
    }

    /// The tenant's rows with `from <= key <= to` (bounds optional), both tiers merged, in key
    /// order, at most `limit`. Archived rows come from the cold tier (pending changes merged)
    /// from `target_primary` on; before that the hot table holds every row.
    pub async fn scan(
        &self,
        tenant: &TenantId,
        from: Option<&[&str]>,
        to: Option<&[&str]>,
        limit: usize,
    ) -> Result<Vec<Row>, TableError> {
        let t = &self.tiering;
        let from = from.map(|k| t.parse_key(k)).transpose()?;
        let to = to.map(|k| t.parse_key(k)).transpose()?;
        let (snapshot, phase) = self.phase(tenant)?;
        let bounds = (
            from.as_ref().map(|k| t.hot.key_object(k)),
            to.as_ref().map(|k| t.hot.key_object(k)),
        );
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let bounds = &bounds;
        let hot_only = |reason| async move {
            self.route(
                tenant,
                "scan",
                TierRoute {
                    path: TierPath::Hot,
                    reason,
                },
            );
            bump(&self.stats.reads_hot);
            t.hot
                .scan(tenant, bounds.0.as_deref(), bounds.1.as_deref(), limit_sql)
                .await
        };
        if matches!(phase, Phase::Legacy | Phase::DualWrite | Phase::Shadow) {
            let rows = hot_only(TierReason::Phase(phase)).await?;
            drop(snapshot);
            return Ok(rows);
        }
        let cold = match t.cold_scan(tenant, from.as_ref(), to.as_ref()).await {
            Ok(cold) => cold,
            Err(e) if phase == Phase::TargetPrimary => {
                bump(&self.stats.fallbacks);
                tracing::warn!(migration = %self.migration(), tenant = %tenant, "cold scan failed, answering from hot: {e}");
                let rows = hot_only(TierReason::Fallback(phase)).await?;
                drop(snapshot);
                return Ok(rows);
            }
            Err(cause) => {
                return Err(self.cold_unavailable(tenant, "(scan)".into(), phase, cause));
            }
        };
        self.route(
            tenant,
            "scan",
            TierRoute {
                path: TierPath::Cold,
                reason: TierReason::Archived(phase),
            },
        );
        bump(&self.stats.reads_cold);
        bump(&self.stats.reads_hot);
        // Hot rows whose key the cold tier holds are copies (cold wins); a key whose archived
        // row was deleted can only be in hot as a new row.
        let mut merged: BTreeMap<RowKey, Row> = BTreeMap::new();
        let images: Vec<(RowKey, String)> = cold
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        if !images.is_empty() {
            let json = format!(
                "[{}]",
                images
                    .iter()
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            for ((key, _), row) in images.iter().zip(t.hot.normalize_many(&json).await?) {
                merged.insert(key.clone(), row);
            }
        }
        // Enough hot rows to fill `limit` even if every archived key in range has a copy.
        let hot_limit = limit_sql.saturating_add(i64::try_from(cold.len()).unwrap_or(i64::MAX));
        for row in t
            .hot
            .scan(tenant, bounds.0.as_deref(), bounds.1.as_deref(), hot_limit)
            .await?
        {
            let key = t.hot.key_of(&row)?;
            if !matches!(cold.get(&key), Some(Some(_))) {
                merged.insert(key, row);
            }
        }
        drop(snapshot);
        Ok(merged.into_values().take(limit).collect())
    }
}
