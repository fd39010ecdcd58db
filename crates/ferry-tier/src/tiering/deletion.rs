//! Deleting the hot copies of archived rows in `target_only`, the step that makes the cold
//! tier the only home of those rows. Each chunk is deleted under the tenant's exclusive lock,
//! so a key with a buffered change, or of a segment retired meanwhile, keeps its hot row.

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
                        deleted += self.delete_keys(&sql, tenant, s.id, &chunk).await?;
                        chunk.clear();
                    }
                }
            }
            if !chunk.is_empty() {
                deleted += self.delete_keys(&sql, tenant, s.id, &chunk).await?;
            }
        }
        Ok(deleted)
    }

    /// Deletes the hot copies of `keys` (key text, key object) of segment `segment`, under the
    /// tenant's exclusive lock: only while the segment is still live, and never a key with a
    /// buffered change (a key deleted and inserted again lives in hot as a new row until its
    /// delete reaches the segment).
    async fn delete_keys(
        &self,
        sql: &str,
        tenant: &TenantId,
        segment: i64,
        keys: &[(String, String)],
    ) -> Result<u64, TierError> {
        let mut lock = self.lock_tenant(tenant, true).await?;
        let live = self.segments(tenant).await?.iter().any(|s| s.id == segment);
        if !live {
            return Ok(0);
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
            return Ok(0);
        }
        let done = sqlx::query(AssertSqlSafe(sql.to_owned()))
            .bind(tenant.as_str())
            .bind(format!("[{}]", objects.join(",")))
            .execute(&mut *lock)
            .await
            .map_err(|e| TierError::db("delete hot copies", e))?;
        lock.commit()
            .await
            .map_err(|e| TierError::db("release the tenant lock", e))?;
        Ok(done.rows_affected())
    }
}
