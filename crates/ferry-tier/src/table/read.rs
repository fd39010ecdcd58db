//! The read paths: a key or a key range, answered by hot up to `shadow` (the cold tier only
//! compared) and by the cold tier for archived keys from `target_primary` on, where only
//! `target_primary` may fall back to hot when the cold tier fails.

use std::collections::BTreeMap;

use ferry_domain::{Phase, TenantId};

use crate::error::TierError;
use crate::hot::Row;
use crate::key::RowKey;
use crate::tiering::{ColdAnswer, key_text};

use super::{TableError, TierPath, TierReason, TierRoute, TieredTable, bump};

impl TieredTable {
    /// Reads one row by key.
    pub async fn get(&self, tenant: &TenantId, key: &[&str]) -> Result<Option<Row>, TableError> {
        self.tiering.decl().check_tenant(tenant)?;
        let key = self.tiering.parse_key(key)?;
        let (snapshot, phase) = self.phase(tenant)?;
        let row = match phase {
            Phase::Legacy | Phase::DualWrite | Phase::Shadow => {
                self.read_hot_authoritative(tenant, &key, phase).await
            }
            Phase::TargetPrimary | Phase::TargetOnly | Phase::Complete => {
                self.read_cold_authoritative(tenant, &key, phase).await
            }
        };
        drop(snapshot);
        row
    }

    /// Up to `shadow`: the hot table answers; in `shadow` the cold tier is read too, only to
    /// compare.
    async fn read_hot_authoritative(
        &self,
        tenant: &TenantId,
        key: &RowKey,
        phase: Phase,
    ) -> Result<Option<Row>, TableError> {
        let t = &self.tiering;
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
                match self.still_differs(tenant, key).await {
                    Ok(true) => {}
                    Ok(false) => return Ok(hot),
                    Err(e) => {
                        tracing::warn!(migration = %self.migration(), tenant = %tenant, "shadow re-check failed, recording the difference: {e}")
                    }
                }
                bump(&self.stats.shadow_mismatches);
                tracing::warn!(migration = %self.migration(), tenant = %tenant, key = %key_text(key), "shadow read differs between hot and cold");
                if let Err(e) = self.record_shadow_difference(tenant, key).await {
                    tracing::warn!(migration = %self.migration(), tenant = %tenant, "shadow mismatch not recorded: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(migration = %self.migration(), tenant = %tenant, "shadow cold read failed: {e}")
            }
        }
        Ok(hot)
    }

    /// Records the key as a mismatch, so the authority flip waits until `ferry tier run`
    /// re-checks it; once: a key read often while it differs is one mismatch, not one per read.
    async fn record_shadow_difference(
        &self,
        tenant: &TenantId,
        key: &RowKey,
    ) -> Result<(), ferry_store::StoreError> {
        let store = &self.tiering.store;
        let text = key_text(key);
        let open = store.open_mismatches(self.migration(), tenant).await?;
        if open.iter().any(|(_, k, _)| *k == text) {
            return Ok(());
        }
        store
            .record_mismatch(
                self.migration(),
                tenant,
                &text,
                "shadow read: hot and cold differ",
            )
            .await
            .map(|_| ())
    }

    /// Whether hot and cold still differ for `key` when read under the key's write lock. A
    /// write holds that lock from its hot write to the buffered change that mirrors it, so a
    /// read that fell between the two (a difference that is not one) sees them agree here.
    async fn still_differs(&self, tenant: &TenantId, key: &RowKey) -> Result<bool, TableError> {
        let t = &self.tiering;
        let mut lock = t.lock_tenant(tenant, false).await?;
        t.lock_key(&mut lock, tenant, key).await?;
        let hot = t.hot.get(tenant, key).await?;
        let differs = match t.cold_get(tenant, key).await? {
            ColdAnswer::Archived(Some(cold)) => Some(&cold) != hot.as_ref(),
            _ => false,
        };
        lock.rollback()
            .await
            .map_err(|e| TierError::db("release the key lock", e))?;
        Ok(differs)
    }

    /// From `target_primary` on: the cold tier answers for archived keys; hot for the rest
    /// (never archived, or archived and deleted: only hot can hold such a key now).
    async fn read_cold_authoritative(
        &self,
        tenant: &TenantId,
        key: &RowKey,
        phase: Phase,
    ) -> Result<Option<Row>, TableError> {
        let t = &self.tiering;
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
        self.tiering.decl().check_tenant(tenant)?;
        let t = &self.tiering;
        let from = from.map(|k| t.parse_key(k)).transpose()?;
        let to = to.map(|k| t.parse_key(k)).transpose()?;
        let (snapshot, phase) = self.phase(tenant)?;
        let bounds = Bounds {
            from_object: from.as_ref().map(|k| t.hot.key_object(k)),
            to_object: to.as_ref().map(|k| t.hot.key_object(k)),
            from,
            to,
        };
        let rows = if matches!(phase, Phase::Legacy | Phase::DualWrite | Phase::Shadow) {
            self.scan_hot(tenant, &bounds, limit, TierReason::Phase(phase))
                .await
                .map_err(TableError::from)
        } else {
            self.scan_cold_authoritative(tenant, &bounds, limit, phase)
                .await
        };
        drop(snapshot);
        rows
    }

    /// The hot table alone: up to `shadow` it holds every row, and in `target_primary` it is
    /// the fallback.
    async fn scan_hot(
        &self,
        tenant: &TenantId,
        bounds: &Bounds,
        limit: usize,
        reason: TierReason,
    ) -> Result<Vec<Row>, TierError> {
        self.route(
            tenant,
            "scan",
            TierRoute {
                path: TierPath::Hot,
                reason,
            },
        );
        bump(&self.stats.reads_hot);
        self.tiering
            .hot
            .scan(
                tenant,
                bounds.from_object.as_deref(),
                bounds.to_object.as_deref(),
                sql_limit(limit),
            )
            .await
    }

    /// From `target_primary` on: the cold tier's rows in range, merged with hot's.
    async fn scan_cold_authoritative(
        &self,
        tenant: &TenantId,
        bounds: &Bounds,
        limit: usize,
        phase: Phase,
    ) -> Result<Vec<Row>, TableError> {
        let cold = match self
            .tiering
            .cold_scan(tenant, bounds.from.as_ref(), bounds.to.as_ref())
            .await
        {
            Ok(cold) => cold,
            Err(e) if phase == Phase::TargetPrimary => {
                bump(&self.stats.fallbacks);
                tracing::warn!(migration = %self.migration(), tenant = %tenant, "cold scan failed, answering from hot: {e}");
                return Ok(self
                    .scan_hot(tenant, bounds, limit, TierReason::Fallback(phase))
                    .await?);
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
        self.merge_tiers(tenant, &cold, bounds, limit).await
    }

    /// The cold tier's rows in range (`key -> image`, `None` for a buffered delete) merged
    /// with the hot table's, in key order, at most `limit`.
    async fn merge_tiers(
        &self,
        tenant: &TenantId,
        cold: &BTreeMap<RowKey, Option<String>>,
        bounds: &Bounds,
        limit: usize,
    ) -> Result<Vec<Row>, TableError> {
        let t = &self.tiering;
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
        let hot_limit =
            sql_limit(limit).saturating_add(i64::try_from(cold.len()).unwrap_or(i64::MAX));
        for row in t
            .hot
            .scan(
                tenant,
                bounds.from_object.as_deref(),
                bounds.to_object.as_deref(),
                hot_limit,
            )
            .await?
        {
            let key = t.hot.key_of(&row)?;
            if !matches!(cold.get(&key), Some(Some(_))) {
                merged.insert(key, row);
            }
        }
        Ok(merged.into_values().take(limit).collect())
    }
}

/// A scan's bounds, as the cold tier compares them (keys) and as the hot table's statement
/// binds them (JSON objects of the key columns).
struct Bounds {
    from: Option<RowKey>,
    to: Option<RowKey>,
    from_object: Option<String>,
    to_object: Option<String>,
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}
