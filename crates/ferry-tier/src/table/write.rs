//! The write paths. Every write holds the tenant's lock shared from its location lookup to
//! its hot write, so a key cannot change tier under it, and the key's own lock, so writes of
//! one key run one at a time from the image they read to the change they enqueue. Up to `shadow` the hot table is
//! authoritative and an archived key's change is mirrored to the cold tier through the
//! buffer; from `target_primary` on the buffer is authoritative for archived keys and the
//! hot copy follows.

use ferry_domain::{Phase, TenantId};
use sqlx::{AssertSqlSafe, PgConnection};

use crate::error::TierError;
use crate::hot::{Row, parse_row};
use crate::key::RowKey;
use crate::tiering::{ColdAnswer, key_text};

use super::{TableError, TierPath, TierReason, TierRoute, TieredTable, bump};

impl TieredTable {
    /// Inserts a row (with its tenant column set to `tenant`).
    pub async fn insert(&self, tenant: &TenantId, mut row: Row) -> Result<Row, TableError> {
        self.tiering.decl().check_tenant(tenant)?;
        let t = &self.tiering;
        row.insert(
            t.decl().tenant.to_string(),
            serde_json::Value::String(tenant.to_string()),
        );
        let key = t.hot.key_of(&row)?;
        let (snapshot, phase) = self.phase(tenant)?;
        let mut lock = t.lock_tenant(tenant, false).await?;
        t.lock_key(&mut lock, tenant, &key).await?;
        // Locks can take a while: write only if the router still routes by confirmed phases.
        self.router.ensure_serving()?;
        self.refuse_archived(tenant, &key, phase).await?;
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
                return Err(self.duplicate(tenant, &key));
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

    /// The location lookup of an insert: refuses a key the cold tier holds.
    async fn refuse_archived(
        &self,
        tenant: &TenantId,
        key: &RowKey,
        phase: Phase,
    ) -> Result<(), TableError> {
        // From target_primary on, an archived key's hot copy may be gone (deleted in
        // target_only, not yet restored after a step back), so the hot table's unique key
        // alone cannot refuse a second row with it: the location lookup must.
        if matches!(
            phase,
            Phase::TargetPrimary | Phase::TargetOnly | Phase::Complete
        ) {
            match self.tiering.cold_get(tenant, key).await {
                Ok(ColdAnswer::Archived(Some(_))) => {
                    return Err(self.duplicate(tenant, key));
                }
                Ok(_) => {}
                // In target_primary the hot copy is there unless a restore is pending; an
                // unavailable cold tier must not stop inserts, the hot key still guards.
                Err(cause) if phase == Phase::TargetPrimary => {
                    bump(&self.stats.cold_errors);
                    tracing::warn!(migration = %self.migration(), tenant = %tenant, "insert not checked against the cold tier: {cause}");
                }
                Err(cause) => {
                    return Err(self.cold_unavailable(tenant, key_text(key), phase, cause));
                }
            }
        }
        Ok(())
    }

    /// An insert refused because its key exists: counted, and returned as
    /// [`TableError::Duplicate`].
    fn duplicate(&self, tenant: &TenantId, key: &RowKey) -> TableError {
        bump(&self.stats.duplicates_refused);
        TableError::Duplicate {
            tenant: tenant.clone(),
            key: key_text(key),
        }
    }

    /// Updates columns of one row; returns the new row, or `None` if there is no such row.
    pub async fn update(
        &self,
        tenant: &TenantId,
        key: &[&str],
        changes: Row,
    ) -> Result<Option<Row>, TableError> {
        self.tiering.decl().check_tenant(tenant)?;
        self.write(tenant, key, Some(changes)).await
    }

    /// Deletes one row; returns whether it existed.
    pub async fn delete(&self, tenant: &TenantId, key: &[&str]) -> Result<bool, TableError> {
        self.tiering.decl().check_tenant(tenant)?;
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
            self.updated_columns(changes)?;
        }
        let (snapshot, phase) = self.phase(tenant)?;
        let changes = changes.as_ref();
        // Held from the location lookup to the hot write, so the key cannot change tier in
        // between (see `Tiering::archive`).
        let mut lock = t.lock_tenant(tenant, false).await?;
        t.lock_key(&mut lock, tenant, &key).await?;
        // Locks can take a while: write only if the router still routes by confirmed phases.
        self.router.ensure_serving()?;
        let (archived, current) = self.locate(tenant, &key, phase).await?;
        let result = match (phase, archived, current) {
            (_, false, _) => self.write_unarchived(tenant, &key, phase, changes).await?,
            (Phase::Legacy | Phase::DualWrite | Phase::Shadow, true, _) => {
                self.write_hot_authoritative(tenant, &key, phase, changes)
                    .await?
            }
            (_, true, None) => None,
            (_, true, Some(current)) => {
                self.write_cold_authoritative(&mut lock, tenant, &key, phase, changes, current)
                    .await?
            }
        };
        lock.commit()
            .await
            .map_err(|e| TierError::db("release the tenant lock", e))?;
        drop(snapshot);
        Ok(result)
    }

    /// The columns `changes` sets, quoted: each must be a column of the table, and neither
    /// the tenant column nor a key column.
    fn updated_columns(&self, changes: &Row) -> Result<Vec<String>, TierError> {
        let decl = self.tiering.decl();
        changes
            .keys()
            .map(
                |name| match decl.columns.iter().find(|c| c.name.as_str() == name) {
                    None => Err(TierError::Value {
                        column: name.clone(),
                        detail: format!("not a column of {}", decl.quoted()),
                    }),
                    Some(c) if c.name == decl.tenant || decl.key.contains(&c.name) => {
                        Err(TierError::Value {
                            column: name.clone(),
                            detail: "tenant and key columns cannot be updated".into(),
                        })
                    }
                    Some(c) => Ok(c.name.quoted()),
                },
            )
            .collect()
    }

    /// The location lookup of a write: `(archived?, its current image)`. A key archived and
    /// then deleted counts as not archived; only the hot table can hold it again.
    async fn locate(
        &self,
        tenant: &TenantId,
        key: &RowKey,
        phase: Phase,
    ) -> Result<(bool, Option<Row>), TableError> {
        if phase == Phase::Legacy {
            return Ok((false, None));
        }
        let t = &self.tiering;
        Ok(match t.cold_get(tenant, key).await {
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
                match t.hot.get(tenant, key).await? {
                    Some(row) => (true, Some(row)),
                    None => (false, None),
                }
            }
            Err(cause) => {
                return Err(self.cold_unavailable(tenant, key_text(key), phase, cause));
            }
        })
    }

    /// A key the cold tier does not hold, in any phase: the hot table alone.
    async fn write_unarchived(
        &self,
        tenant: &TenantId,
        key: &RowKey,
        phase: Phase,
        changes: Option<&Row>,
    ) -> Result<Option<Row>, TableError> {
        self.route(
            tenant,
            write_op(changes),
            TierRoute {
                path: TierPath::Hot,
                reason: TierReason::Phase(phase),
            },
        );
        self.write_hot(tenant, key, changes).await
    }

    /// Up to `shadow`, a key that is archived (or that the cold tier could not rule out): the
    /// hot table is authoritative and written first; the cold tier's mirror is the buffered
    /// image of what hot then holds.
    async fn write_hot_authoritative(
        &self,
        tenant: &TenantId,
        key: &RowKey,
        phase: Phase,
        changes: Option<&Row>,
    ) -> Result<Option<Row>, TableError> {
        self.route(
            tenant,
            write_op(changes),
            TierRoute {
                path: TierPath::HotThenBuffer,
                reason: TierReason::Archived(phase),
            },
        );
        let written = self.write_hot(tenant, key, changes).await?;
        // The mirror: what hot now holds (or that it holds nothing).
        let image = self.tiering.hot.get(tenant, key).await?;
        self.buffer(tenant, key, image.as_ref()).await?;
        Ok(written)
    }

    /// From `target_primary` on, an archived key with its `current` image: the buffer is
    /// authoritative, then the hot copy follows in the write's lock. Returns the new image
    /// (for a delete: `current`).
    async fn write_cold_authoritative(
        &self,
        lock: &mut PgConnection,
        tenant: &TenantId,
        key: &RowKey,
        phase: Phase,
        changes: Option<&Row>,
        current: Row,
    ) -> Result<Option<Row>, TableError> {
        let image = match changes {
            Some(c) => Some(self.next_image(&current, c).await?),
            None => None,
        };
        // The table's own constraints judge the new row before it is acknowledged (item 8 of
        // the review: json_populate_record checks types only, not CHECK or NOT NULL).
        if let Some(row) = &image
            && let Err(refusal) = self.tiering.hot.check_image(lock, row).await
        {
            return Err(TableError::Rejected {
                tenant: tenant.clone(),
                key: key_text(key),
                detail: refusal
                    .as_database_error()
                    .map_or_else(|| refusal.to_string(), |d| d.message().to_owned()),
            });
        }
        // Acknowledged once durable in the buffer: the cold tier's authority.
        self.buffer(tenant, key, image.as_ref()).await?;
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
            write_op(changes),
            TierRoute {
                path,
                reason: TierReason::Archived(phase),
            },
        );
        self.mirror_hot_copy(lock, tenant, key, phase, image.as_ref())
            .await?;
        Ok(Some(image.unwrap_or(current)))
    }

    /// `current` with `changes` applied, in `to_jsonb` form.
    async fn next_image(&self, current: &Row, changes: &Row) -> Result<Row, TableError> {
        let mut next = current.clone();
        for (k, v) in changes {
            next.insert(k.clone(), v.clone());
        }
        Ok(self
            .tiering
            .hot
            .normalize_json(&serde_json::Value::Object(next).to_string())
            .await?)
    }

    /// Brings an archived key's hot copy in line with its buffered `image` (`None`: deleted),
    /// in the write's lock: the whole copy in `target_primary`, later only a copy that still
    /// exists. A failure does not fail the write (the change is in the buffer already); in
    /// `target_primary`, whose rollback returns authority to hot, it is recorded as a
    /// mismatch, so that rollback waits until `ferry tier run` has repaired the copy (item 8
    /// of the review: it used to be only logged, and a rollback served the stale copy).
    async fn mirror_hot_copy(
        &self,
        lock: &mut PgConnection,
        tenant: &TenantId,
        key: &RowKey,
        phase: Phase,
        image: Option<&Row>,
    ) -> Result<(), TableError> {
        let whole = phase == Phase::TargetPrimary;
        let Err(e) = self
            .tiering
            .hot
            .mirror_in_savepoint(lock, tenant, key, image, whole)
            .await
        else {
            return Ok(());
        };
        tracing::warn!(migration = %self.migration(), tenant = %tenant, "hot copy not updated: {e}");
        if whole {
            self.tiering
                .store
                .record_mismatch(
                    self.migration(),
                    tenant,
                    &key_text(key),
                    &format!("hot copy not updated: {e}"),
                )
                .await
                .map_err(TierError::Store)?;
        }
        Ok(())
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
        let columns = self.updated_columns(changes)?;
        if columns.is_empty() {
            return Ok(t.hot.get(tenant, key).await?);
        }
        let list = columns.join(", ");
        let key_match = decl.key_match(3);
        let sql = format!(
            "UPDATE {table} AS t SET ({list}) = (SELECT {list} FROM json_populate_record(NULL::{table}, $1::json)) \
             WHERE {tenant} AND {key_match} RETURNING to_jsonb(t)::text",
            table = decl.quoted(),
            tenant = decl.tenant_match("t", 2),
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

/// A write's operation, as routes name it.
fn write_op(changes: Option<&Row>) -> &'static str {
    if changes.is_some() {
        "update"
    } else {
        "delete"
    }
}
