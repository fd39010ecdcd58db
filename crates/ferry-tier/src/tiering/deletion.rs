//! Deleting the hot copies of archived rows in `target_only`, the step that makes the cold
//! tier the only home of those rows. Each chunk is deleted under the tenant's exclusive lock,
//! so a key with a buffered change, or of a segment retired meanwhile, keeps its hot row; and
//! only while the tenant is still in the `target_only` epoch the pass started in, so a pass
//! that outlives a step back to `target_primary` stops instead of deleting the copies that
//! phase falls back to (item 5 of the review).

use std::collections::HashSet;

use ferry_domain::TenantId;
use sqlx::AssertSqlSafe;

use crate::error::TierError;
use crate::key::key_at;
use crate::segment::key_columns;

use super::{Tiering, key_text};

impl Tiering {
    /// In `target_only`: deletes the hot copies of the tenant's archived rows, `batch` keys
    /// per statement. Pending changes are applied first, so no hot copy is the only place a
    /// change lives. Returns the rows deleted.
    pub async fn delete_hot_copies(
        &self,
        tenant: &TenantId,
        batch: usize,
    ) -> Result<u64, TierError> {
        self.decl().check_tenant(tenant)?;
        let epoch = self.store.tenant(&self.migration, tenant).await?.copy_epoch;
        self.apply_buffer(tenant).await?;
        let segments = self.segments(tenant).await?;
        let decl = self.decl();
        let keys = decl.key_list("k");
        let sql = format!(
            "DELETE FROM {} AS t WHERE {} AND ({}) IN (SELECT {keys} FROM json_populate_recordset(NULL::{}, $2::json) AS k)",
            decl.quoted(),
            decl.tenant_match("t", 1),
            decl.key_list("t"),
            decl.quoted(),
        );
        let columns = key_columns(decl);
        let mut deleted = 0;
        for s in &segments {
            let mut chunk: Vec<(String, String)> = Vec::new();
            for b in self.cold.read_checked(self.decl(), &Self::path(s)).await? {
                for row in 0..b.num_rows() {
                    let Some(key) = key_at(decl, &b, &columns, row) else {
                        continue;
                    };
                    let object: serde_json::Map<String, serde_json::Value> = decl
                        .key
                        .iter()
                        .zip(&key)
                        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_text())))
                        .collect();
                    chunk.push((
                        key_text(&key),
                        serde_json::Value::Object(object).to_string(),
                    ));
                    if chunk.len() >= batch.max(1) {
                        let Some(n) = self.delete_keys(&sql, tenant, epoch, s.id, &chunk).await?
                        else {
                            return Ok(deleted);
                        };
                        deleted += n;
                        chunk.clear();
                    }
                }
            }
            if !chunk.is_empty() {
                let Some(n) = self.delete_keys(&sql, tenant, epoch, s.id, &chunk).await? else {
                    return Ok(deleted);
                };
                deleted += n;
            }
        }
        Ok(deleted)
    }

    /// Deletes the hot copies of `keys` (key text, key object) of segment `segment`, under the
    /// tenant's exclusive lock: only while the tenant is in `target_only` in copy epoch
    /// `epoch` (`None` otherwise: the pass must stop) and the segment is still live, and never
    /// a key with a buffered change (a key deleted and inserted again lives in hot as a new row
    /// until its delete reaches the segment).
    async fn delete_keys(
        &self,
        sql: &str,
        tenant: &TenantId,
        epoch: i64,
        segment: i64,
        keys: &[(String, String)],
    ) -> Result<Option<u64>, TierError> {
        let mut lock = self.lock_tenant(tenant, true).await?;
        let record = self.store.tenant(&self.migration, tenant).await?;
        if record.state.phase != ferry_domain::Phase::TargetOnly || record.copy_epoch != epoch {
            tracing::info!(
                migration = %self.migration, tenant = %tenant, phase = %record.state.phase,
                "the tenant left target_only; hot-copy deletion stops"
            );
            return Ok(None);
        }
        let live = self.segments(tenant).await?.iter().any(|s| s.id == segment);
        if !live {
            return Ok(Some(0));
        }
        let changing: HashSet<String> = self
            .pending(tenant)
            .await?
            .into_iter()
            .map(|u| u.key)
            .collect();
        let objects: Vec<&str> = keys
            .iter()
            .filter(|(text, _)| !changing.contains(text))
            .map(|(_, object)| object.as_str())
            .collect();
        if objects.is_empty() {
            return Ok(Some(0));
        }
        let done = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .bind(tenant.as_str())
            .bind(format!("[{}]", objects.join(",")))
            .execute(&mut *lock)
            .await
            .map_err(|e| TierError::db("delete hot copies", e))?;
        ferry_crash::crash_point!("hot_copy_delete");
        lock.commit()
            .await
            .map_err(|e| TierError::db("release the tenant lock", e))?;
        Ok(Some(done.rows_affected()))
    }
}
