//! Applying the update buffer: changes to archived keys are rewritten into their segments
//! copy-on-write and swapped in with one manifest commit that also marks them applied, so a
//! crash between the upload and the commit leaves the changes pending and an orphan to collect.

use std::collections::{BTreeMap, HashSet};

use arrow_array::RecordBatch;
use ferry_domain::TenantId;
use ferry_store::{BufferedUpdate, SegmentCommit, SegmentRecord, StoreError};
use sqlx::AssertSqlSafe;

use crate::error::TierError;
use crate::key::RowKey;

use super::{Tiering, err_store};

impl Tiering {
    /// Applies the tenant's pending buffered changes: each affected segment is rewritten
    /// (copy-on-write) with the changes in sequence order and swapped in atomically with the
    /// changes marked applied. Returns how many changes were applied.
    ///
    /// One applier per tenant at a time, across processes (an advisory lock): two would
    /// rewrite the same segment, and the loser's refused manifest swap would count as a failed
    /// attempt of changes that are fine, until they were dead letters. A swap refused because
    /// an archive, a restore or a collection changed the manifest meanwhile is retried from
    /// a fresh read, and not counted against the changes either.
    pub async fn apply_buffer(&self, tenant: &TenantId) -> Result<u64, TierError> {
        self.decl().check_tenant(tenant)?;
        let applier = self.lock_applier(tenant).await?;
        let applied = self.apply_locked(tenant).await;
        applier
            .commit()
            .await
            .map_err(|e| TierError::db("release the applier lock", e))?;
        applied
    }

    /// The transaction holding the tenant's applier lock until it ends. Whoever holds it is
    /// the only one changing segments' rows: a buffer worker, or a restore reading them.
    pub(super) async fn lock_applier(
        &self,
        tenant: &TenantId,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, TierError> {
        let mut applier = self
            .hot
            .pool
            .begin()
            .await
            .map_err(|e| TierError::db("begin the applier lock", e))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{}:apply", self.lock_name(tenant)))
            .execute(&mut *applier)
            .await
            .map_err(|e| TierError::db("take the applier lock", e))?;
        Ok(applier)
    }

    /// [`Tiering::apply_buffer`] for a caller holding the applier lock.
    pub(super) async fn apply_locked(&self, tenant: &TenantId) -> Result<u64, TierError> {
        let mut applied = 0;
        let mut swaps_refused = 0;
        loop {
            match self.apply_pending(tenant, &mut applied).await {
                Err(TierError::Store(StoreError::Conflict { .. })) if swaps_refused < 5 => {
                    swaps_refused += 1;
                }
                other => return other.map(|()| applied),
            }
        }
    }

    /// One pass over the pending changes, adding those applied to `applied`.
    async fn apply_pending(&self, tenant: &TenantId, applied: &mut u64) -> Result<(), TierError> {
        let open = self.pending(tenant).await?;
        // A dead change waits for an operator; later changes to its key wait behind it, or
        // a retry would apply an older image over a newer one.
        let blocked: HashSet<&str> = open
            .iter()
            .filter(|u| u.state == "dead")
            .map(|u| u.key.as_str())
            .collect();
        let pending: Vec<BufferedUpdate> = open
            .iter()
            .filter(|u| u.state == "pending" && !blocked.contains(u.key.as_str()))
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let segments = self.segments(tenant).await?;
        // Changes per segment (by index), in sequence order; keys no segment covers get a
        // segment of their own.
        let mut groups: BTreeMap<Option<usize>, Vec<&BufferedUpdate>> = BTreeMap::new();
        for u in &pending {
            let key = self.parse_stored_key(&u.key)?;
            let home = match self.home_of(&segments, &key).await {
                Ok(home) => home,
                Err(e) => {
                    // The cold tier cannot be read: every pending change failed an attempt.
                    let seqs: Vec<i64> = pending.iter().map(|u| u.seq).collect();
                    self.store
                        .record_update_failure(&seqs, &e.to_string(), self.config.buffer.dead_after)
                        .await
                        .map_err(err_store)?;
                    return Err(e);
                }
            };
            groups.entry(home).or_default().push(u);
        }
        for (home, changes) in groups {
            let seqs: Vec<i64> = changes.iter().map(|u| u.seq).collect();
            let result = self
                .rewrite(tenant, home.map(|i| &segments[i]), &changes)
                .await;
            match result {
                Ok(()) => *applied += seqs.len() as u64,
                // The manifest moved on: nothing is wrong with these changes.
                Err(e @ TierError::Store(StoreError::Conflict { .. })) => return Err(e),
                Err(e) => {
                    self.store
                        .record_update_failure(&seqs, &e.to_string(), self.config.buffer.dead_after)
                        .await
                        .map_err(err_store)?;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The segment holding `key` (ranges of segments from different runs can overlap, so a
    /// covering range is not enough), or else the first whose range covers it, or none.
    async fn home_of(
        &self,
        segments: &[SegmentRecord],
        key: &RowKey,
    ) -> Result<Option<usize>, TierError> {
        let mut covering = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            if self.covers(s, key)? {
                covering.push(i);
            }
        }
        // One covering range (keys that grow with age): it is the only place the key can be.
        if covering.len() <= 1 {
            return Ok(covering.first().copied());
        }
        for &i in &covering {
            let path = Self::path(&segments[i]);
            if self.cold.lookup(self.decl(), &path, key).await?.is_some() {
                return Ok(Some(i));
            }
        }
        Ok(covering.first().copied())
    }

    async fn rewrite(
        &self,
        tenant: &TenantId,
        segment: Option<&SegmentRecord>,
        changes: &[&BufferedUpdate],
    ) -> Result<(), TierError> {
        // key text -> row JSON (the codec's or to_jsonb form: PostgreSQL reads both).
        let mut rows: BTreeMap<RowKey, String> = BTreeMap::new();
        if let Some(s) = segment {
            for batch in self.cold.read_checked(self.decl(), &Self::path(s)).await? {
                rows.extend(self.batch_images(&batch));
            }
        }
        for u in changes {
            let key = self.parse_stored_key(&u.key)?;
            match u.operation.as_str() {
                "delete" => {
                    rows.remove(&key);
                }
                _ => {
                    rows.insert(key, u.payload.to_string());
                }
            }
        }
        let mut add = Vec::new();
        if !rows.is_empty() {
            let json = format!("[{}]", rows.values().cloned().collect::<Vec<_>>().join(","));
            let batch = self.rows_from_json(&json).await?;
            add.push(self.upload(tenant, &batch).await?);
        }
        // The changes are in the new segment; until the commit below they stay pending, and
        // a crash here leaves them to be applied again and the segment an orphan to collect.
        ferry_crash::crash_point!("buffer_apply");
        self.commit(
            tenant,
            &SegmentCommit {
                add,
                retire: segment.map(|s| vec![s.id]).unwrap_or_default(),
                applied: changes.iter().map(|u| u.seq).collect(),
                archived_through: None,
                requeue: Vec::new(),
            },
        )
        .await
    }

    /// Row images (JSON array) as a batch in key order, converted by PostgreSQL itself.
    async fn rows_from_json(&self, json: &str) -> Result<RecordBatch, TierError> {
        let decl = self.decl();
        let sql = format!(
            "SELECT {} FROM json_populate_recordset(NULL::{}, $1::json) AS t ORDER BY {}",
            decl.select_list(),
            decl.quoted(),
            decl.key_list("t"),
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(json)
            .fetch_all(&self.hot.pool)
            .await
            .map_err(|e| TierError::db("convert row images", e))?;
        crate::codec::rows_to_batch(decl, &rows)
    }
}
