//! The write paths. Every write holds the tenant's lock shared from its location lookup to
//! its hot write, so a key cannot change tier under it. Up to `shadow` the hot table is
//! authoritative and an archived key's change is mirrored to the cold tier through the
//! buffer; from `target_primary` on the buffer is authoritative for archived keys and the
//! hot copy follows.

use ferry_domain::{Phase, TenantId};
use sqlx::AssertSqlSafe;

use crate::error::TierError;
use crate::hot::{Row, parse_row};
use crate::key::RowKey;
use crate::tiering::{ColdAnswer, key_text};

use super::{TableError, TierPath, TierReason, TierRoute, TieredTable, bump};

impl TieredTable {
    /// Inserts a row (with its tenant column set to `tenant`).
    pub async fn insert(&self, tenant: &TenantId, mut row: Row) -> Result<Row, TableError> {
        let t = &self.tiering;
        row.insert(
            t.decl().tenant.to_string(),
            serde_json::Value::String(tenant.to_string()),
        );
        let key = t.hot.key_of(&row)?;
        let (snapshot, phase) = self.phase(tenant)?;
        let lock = t.lock_tenant(tenant, false).await?;
        // From target_primary on, an archived key's hot copy may be gone (deleted in
        // target_only, not yet restored after a step back), so the hot table's unique key
        // alone cannot refuse a second row with it: the location lookup must.
        if matches!(
            phase,
            Phase::TargetPrimary | Phase::TargetOnly | Phase::Complete
        ) {
            match t.cold_get(tenant, &key).await {
                Ok(ColdAnswer::Archived(Some(_))) => {
                    bump(&self.stats.duplicates_refused);
                    return Err(TableError::Duplicate {
                        tenant: tenant.clone(),
                        key: key_text(&key),
                    });
                }
                Ok(_) => {}
                // In target_primary the hot copy is there unless a restore is pending; an
                // unavailable cold tier must not stop inserts, the hot key still guards.
                Err(cause) if phase == Phase::TargetPrimary => {
                    bump(&self.stats.cold_errors);
                    tracing::warn!(migration = %self.migration(), tenant = %tenant, "insert not checked against the cold tier: {cause}");
                }
                Err(cause) => {
                    return Err(self.cold_unavailable(tenant, key_text(&key), phase, cause));
                }
            }
        }
        self.route(
            tenant,
            "insert",
            TierRoute {
                path: TierPath::Hot,
                reason: TierReason::Phase(phase),
            },
        );
        let written = match t.hot.insert(&row).await {
            Err(TierError::Database { cause, .. })
                if cause.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") =>
            {
                bump(&self.stats.duplicates_refused);
                return Err(TableError::Duplicate {
                    tenant: tenant.clone(),
                    key: key_text(&key),
                });
            }
            other => other?,
        };
        bump(&self.stats.writes_hot);
        lock.commit()
            .await
            .map_err(|e| TierError::db("release the tenant lock", e))?;
        drop(snapshot);
        Ok(written)
    }

    /// Updates columns of one row; returns the new row, or `None` if there is no such row.
    pub async fn update(
        &self,
        tenant: &TenantId,
        key: &[&str],
        changes: Row,
    ) -> Result<Option<Row>, TableError> {
        self.write(tenant, key, Some(changes)).await
    }

    /// Deletes one row; returns whether it existed.
    pub async fn delete(&self, tenant: &TenantId, key: &[&str]) -> Result<bool, TableError> {
        Ok(self.write(tenant, key, None).await?.is_some())
    }

    /// An update (`Some(changes)`) or delete (`None`); returns the row as it was written (for
    /// a delete: as it was before).
    async fn write(
        &self,
        tenant: &TenantId,
        key: &[&str],
        changes: Option<Row>,
    ) -> Result<Option<Row>, TableError> {
        let t = &self.tiering;
        let key = t.parse_key(key)?;
        if let Some(changes) = &changes {
            // Checked before any path: an archived row's new image is built from these.
            let decl = t.decl();
            for name in changes.keys() {
                let column = decl.columns.iter().find(|c| c.name.as_str() == name);
                match column {
                    None => {
                        return Err(TierError::Value {
                            column: name.clone(),
                            detail: format!("not a column of {}", decl.quoted()),
                        }
                        .into());
                    }
                    Some(c) if c.name == decl.tenant || decl.key.contains(&c.name) => {
                        return Err(TierError::Value {
                            column: name.clone(),
                            detail: "tenant and key columns cannot be updated".into(),
                        }
                        .into());
                    }
                    Some(_) => {}
                }
            }
        }
        let (snapshot, phase) = self.phase(tenant)?;
        let op = if changes.is_some() {
            "update"
        } else {
            "delete"
        };
        // Held from the location lookup to the hot write, so the key cannot change tier in
        // between (see `Tiering::archive`).
        let mut lock = t.lock_tenant(tenant, false).await?;
        // (archived?, its current image): a key archived and then deleted counts as not
        // archived; only the hot table can hold it again.
        let (archived, current) = if phase == Phase::Legacy {
            (false, None)
        } else {
            match t.cold_get(tenant, &key).await {
                Ok(ColdAnswer::Archived(Some(row))) => (true, Some(row)),
                Ok(_) => (false, None),
                // Hot is authoritative up to shadow: write it, and buffer the change in case
                // the key is archived (applying it to a key that is not changes nothing wrong).
                Err(_) if matches!(phase, Phase::DualWrite | Phase::Shadow) => (true, None),
                // The hot copy is kept in step in target_primary: it stands in for the
                // current image, and the change still goes through the buffer.
                Err(e) if phase == Phase::TargetPrimary => {
                    bump(&self.stats.fallbacks);
                    tracing::warn!(migration = %self.migration(), tenant = %tenant, "cold read for a write failed, using the hot copy: {e}");
                    match t.hot.get(tenant, &key).await? {
                        Some(row) => (true, Some(row)),
                        None => (false, None),
                    }
                }
                Err(cause) => {
                    return Err(self.cold_unavailable(tenant, key_text(&key), phase, cause));
                }
            }
        };
        let result = match (phase, archived, current) {
            (_, false, _) => {
                self.route(
                    tenant,
                    op,
                    TierRoute {
                        path: TierPath::Hot,
                        reason: TierReason::Phase(phase),
                    },
                );
                self.write_hot(tenant, &key, changes.as_ref()).await?
            }
            (Phase::Legacy | Phase::DualWrite | Phase::Shadow, true, _) => {
                self.route(
                    tenant,
                    op,
                    TierRoute {
                        path: TierPath::HotThenBuffer,
                        reason: TierReason::Archived(phase),
                    },
                );
                let written = self.write_hot(tenant, &key, changes.as_ref()).await?;
                // The mirror: what hot now holds (or that it holds nothing).
                let image = t.hot.get(tenant, &key).await?;
                self.buffer(tenant, &key, image.as_ref()).await?;
                written
            }
            (_, true, None) => None,
            (_, true, Some(current)) => {
                let image = match &changes {
                    Some(c) => {
                        let mut next = current.clone();
                        for (k, v) in c {
                            next.insert(k.clone(), v.clone());
                        }
                        Some(
                            t.hot
                                .normalize_json(&serde_json::Value::Object(next).to_string())
                                .await?,
                        )
                    }
                    None => None,
                };
                // Acknowledged once durable in the buffer: the cold tier's authority.
                self.buffer(tenant, &key, image.as_ref()).await?;
                // The hot copy: kept in step in target_primary (it is the fallback); in
                // target_only only a delete reaches it, so a deleted key's stale copy can
                // never be read or block an insert before the copies are deleted.
                // The hot copy follows in the same lock: in target_primary it is the fallback
                // (kept whole); later, while it still exists, it is updated or deleted but
                // never created again, so no key is in both tiers as two different rows.
                let path = if phase == Phase::TargetPrimary {
                    TierPath::BufferThenHot
                } else {
                    TierPath::Buffer
                };
                self.route(
                    tenant,
                    op,
                    TierRoute {
                        path,
                        reason: TierReason::Archived(phase),
                    },
                );
                let mirrored = if phase == Phase::TargetPrimary || image.is_none() {
                    t.hot.mirror(&mut lock, tenant, &key, image.as_ref()).await
                } else {
                    match &image {
                        Some(row) => t.hot.mirror_existing(&mut lock, tenant, &key, row).await,
                        None => Ok(()),
                    }
                };
                if let Err(e) = mirrored {
                    tracing::warn!(migration = %self.migration(), tenant = %tenant, "hot copy not updated: {e}");
                }
                Some(image.unwrap_or(current))
            }
        };
        lock.commit()
            .await
            .map_err(|e| TierError::db("release the tenant lock", e))?;
        drop(snapshot);
        Ok(result)
    }

    async fn buffer(
        &self,
        tenant: &TenantId,
        key: &RowKey,
        image: Option<&Row>,
    ) -> Result<(), TableError> {
        let (operation, payload) = match image {
            Some(row) => ("upsert", serde_json::Value::Object(row.clone())),
            None => ("delete", serde_json::Value::Null),
        };
        self.tiering
            .store
            .enqueue_update(
                self.migration(),
                tenant,
                &key_text(key),
                operation,
                &payload,
            )
            .await
            .map_err(TierError::Store)?;
        bump(&self.stats.buffered);
        Ok(())
    }

    async fn write_hot(
        &self,
        tenant: &TenantId,
        key: &RowKey,
        changes: Option<&Row>,
    ) -> Result<Option<Row>, TableError> {
        let t = &self.tiering;
        bump(&self.stats.writes_hot);
        let Some(changes) = changes else {
            let before = t.hot.get(tenant, key).await?;
            t.hot.delete(tenant, key).await?;
            return Ok(before);
        };
        let decl = t.decl();
        let mut columns = Vec::new();
        for name in changes.keys() {
            let c = decl
                .columns
                .iter()
                .find(|c| c.name.as_str() == name)
                .ok_or_else(|| TierError::Value {
                    column: name.clone(),
                    detail: format!("not a column of {}", decl.quoted()),
                })?;
            if c.name == decl.tenant || decl.key.contains(&c.name) {
                return Err(TierError::Value {
                    column: name.clone(),
                    detail: "key columns cannot be updated".into(),
                }
                .into());
            }
            columns.push(c.name.quoted());
        }
        if columns.is_empty() {
            return Ok(t.hot.get(tenant, key).await?);
        }
        let list = columns.join(", ");
        let key_match = decl.key_match(3);
        let sql = format!(
            "UPDATE {table} AS t SET ({list}) = (SELECT {list} FROM json_populate_record(NULL::{table}, $1::json)) \
             WHERE t.{tenant} = $2 AND {key_match} RETURNING to_jsonb(t)::text",
            table = decl.quoted(),
            tenant = decl.tenant.quoted(),
        );
        let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql))
            .bind(serde_json::Value::Object(changes.clone()).to_string())
            .bind(tenant.as_str());
        for v in key {
            q = q.bind(v.to_text());
        }
        let text = q
            .fetch_optional(&t.hot.pool)
            .await
            .map_err(|e| TierError::db("update a hot row", e))?;
        Ok(text.map(|t| parse_row(&t)).transpose()?)
    }
}
