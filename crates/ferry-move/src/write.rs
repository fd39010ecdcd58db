//! The write half of [`MovedTable`]: insert, update and delete.
//!
//! A write runs in two transactions, one per side. The authoritative side's is opened first
//! and holds the row (or, for deletes, the tenant lock) until the end, so two requests on one
//! key reach both sides in the same order and a delete cannot slip between a write and its
//! mirror. The other side's change is then made in its own transaction and left open; the
//! authoritative side commits first, and only then the other. So a failed authoritative
//! COMMIT rolls the other side back (item 9 of the review: it used to have committed
//! already, leaving the write on the non-authoritative side only), and a failed second half
//! is parked in the update buffer once the authoritative write is durable.

use ferry_domain::{Side, TenantId};
use ferry_router::RouteOp;
use ferry_store::CopyDirection;
use sqlx::{AssertSqlSafe, Postgres, Transaction};

use crate::route::RouteDecision;
use crate::table::{Column, Key, MoveError, MovedTable, Row, index, json_text, parse_row};
use crate::unknown::outcome_unknown;
use std::sync::atomic::Ordering;

type Tx = Transaction<'static, Postgres>;

/// The non-authoritative half of a write: made in an open transaction, or failed. Either
/// way it knows what to park in the update buffer if it cannot be committed.
pub(crate) struct OtherSide {
    pub(crate) side: Side,
    pub(crate) key: Key,
    operation: &'static str,
    payload: serde_json::Value,
    pub(crate) written: Result<Tx, MoveError>,
    /// The mirror changed nothing because the other side already holds a newer version of
    /// the row: a divergence to record once the authoritative write is durable.
    diverged: bool,
    /// Buffered changes applied to this side before the write (see `key_lock`).
    caught_up: Vec<i64>,
}

/// What a two-sided write holds before it writes: the buffered changes applied to the
/// authoritative side under the key's lock and, when the source is the second side, the
/// source transaction holding that lock (the mirror then runs in it).
pub(crate) struct Serialized {
    caught_up: Vec<i64>,
    pub(crate) second: Option<Tx>,
}

/// Why [`MovedTable::commit_pair`] did not finish: refused (nothing committed on the
/// authoritative side), or the authoritative COMMIT lost its answer.
pub(crate) enum PairError {
    Failed(MoveError),
    Unknown(Box<OtherSide>, sqlx::Error),
}

impl From<MoveError> for PairError {
    fn from(e: MoveError) -> Self {
        PairError::Failed(e)
    }
}

impl Serialized {
    fn none() -> Serialized {
        Serialized {
            caught_up: Vec::new(),
            second: None,
        }
    }
}

impl MovedTable {
    /// Inserts a row (its tenant column is set to `tenant`, its version to the first one).
    pub async fn insert(&self, tenant: &TenantId, row: Row) -> Result<Row, MoveError> {
        self.plan.check_tenant(tenant)?;
        self.check_columns(&row)?;
        let snapshot = self.router.snapshot()?;
        let decision = RouteDecision::write(
            snapshot
                .phase(self.migration.as_str(), tenant.as_str())
                .phase,
        );
        self.record(tenant, RouteOp::Write, &decision);
        let (first, then) = decision.write_sides();
        let columns: Vec<Column> = self
            .plan
            .columns
            .iter()
            .filter(|c| row.contains_key(c.name.as_str()))
            .cloned()
            .collect();
        let key: Option<Key> = self
            .plan
            .order
            .iter()
            .map(|c| row.get(c.name.as_str()).map(json_text))
            .collect();
        let payload = serde_json::Value::Object(row).to_string();
        // A key the database generates cannot be raced by another insert of it.
        let (mut tx, mut serialized) = match &key {
            Some(key) => self.serialize(tenant, key, first, then).await?,
            None => (self.begin(first).await?, Serialized::none()),
        };
        let sql = self.shaped(true, first, &columns);
        let stored: String = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(&payload)
            .fetch_one(&mut *tx)
            .await
            .map_err(self.write_error(first))?;
        let other = match then {
            Some(second) => {
                let pre = serialized.second.take();
                Some(self.mirror(second, tenant, &stored, pre).await?)
            }
            None => None,
        };
        self.commit_both(tenant, first, tx, other, serialized)
            .await?;
        drop(snapshot);
        parse_row(&stored)
    }

    /// Updates the given columns of a row; `None` if there is no such row.
    pub async fn update(
        &self,
        tenant: &TenantId,
        key: &[&str],
        changes: Row,
    ) -> Result<Option<Row>, MoveError> {
        self.plan.check_tenant(tenant)?;
        let key = self.check_key(key)?;
        let columns = self.updatable(&changes)?;
        let snapshot = self.router.snapshot()?;
        let decision = RouteDecision::write(
            snapshot
                .phase(self.migration.as_str(), tenant.as_str())
                .phase,
        );
        self.record(tenant, RouteOp::Write, &decision);
        let (first, then) = decision.write_sides();
        let sql = self.shaped(false, first, &columns);
        let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(tenant.as_str());
        for v in &key {
            q = q.bind(v.as_str());
        }
        let (mut tx, mut serialized) = self.serialize(tenant, &key, first, then).await?;
        let stored = q
            .bind(serde_json::Value::Object(changes).to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.write_error(first))?;
        let Some(stored) = stored else {
            tx.commit().await.map_err(self.write_error(first))?;
            self.mark_applied(&serialized.caught_up).await?;
            return Ok(None);
        };
        let other = match then {
            Some(second) => {
                let pre = serialized.second.take();
                Some(self.mirror(second, tenant, &stored, pre).await?)
            }
            None => None,
        };
        self.commit_both(tenant, first, tx, other, serialized)
            .await?;
        drop(snapshot);
        parse_row(&stored).map(Some)
    }

    /// Deletes a row; whether it existed.
    pub async fn delete(&self, tenant: &TenantId, key: &[&str]) -> Result<bool, MoveError> {
        self.plan.check_tenant(tenant)?;
        let key = self.check_key(key)?;
        let snapshot = self.router.snapshot()?;
        let phase = snapshot
            .phase(self.migration.as_str(), tenant.as_str())
            .phase;
        let decision = RouteDecision::write(phase);
        self.record(tenant, RouteOp::Write, &decision);
        let (first, then) = decision.write_sides();
        let (mut tx, mut serialized) = self.serialize(tenant, &key, first, then).await?;
        // Held until both sides are done: a copy batch that could write this row back waits,
        // or finished before and its copy is deleted with the rest.
        if self.lock_deletes && ferry_copier::tenant_lock::guards_deletes(phase, first) {
            ferry_copier::tenant_lock::take(&mut tx, &self.migration, tenant, false)
                .await
                .map_err(self.write_error(first))?;
        }
        let existed = self.delete_on(first, tenant, &key, &mut tx).await?;
        let other = match then {
            Some(second) => {
                let pre = serialized.second.take();
                Some(self.delete_other(second, tenant, &key, pre).await)
            }
            None => None,
        };
        self.commit_both(tenant, first, tx, other, serialized)
            .await?;
        drop(snapshot);
        Ok(existed)
    }

    /// Opens the authoritative side's transaction. In the phases that write both sides, the
    /// key's lock is taken first, in a source transaction (the write's own when the source is
    /// authoritative, else the one the mirror will use), and the buffer's changes for the key
    /// are applied to the authoritative side (see `key_lock`).
    pub(crate) async fn serialize(
        &self,
        tenant: &TenantId,
        key: &Key,
        first: Side,
        then: Option<Side>,
    ) -> Result<(Tx, Serialized), MoveError> {
        if then.is_none() {
            return Ok((self.begin(first).await?, Serialized::none()));
        }
        let (mut tx, second) = if first == Side::Source {
            let mut tx = self.begin(Side::Source).await?;
            self.lock_key(tenant, key, &mut tx).await?;
            (tx, None)
        } else {
            let mut source = self.begin(Side::Source).await?;
            self.lock_key(tenant, key, &mut source).await?;
            self.lock_timeout(Side::Source, &mut source).await?;
            (self.begin(first).await?, Some(source))
        };
        let caught_up = self.catch_up(first, tenant, key, &mut tx).await?;
        Ok((tx, Serialized { caught_up, second }))
    }

    async fn begin(&self, side: Side) -> Result<Tx, MoveError> {
        self.pool(side)
            .begin()
            .await
            .map_err(self.write_error(side))
    }

    /// Commits the authoritative side, then the other. The router must still be serving
    /// (its phases confirmed within the serve window) or nothing is committed. If the
    /// authoritative COMMIT is refused, the other side's transaction is rolled back with it;
    /// if its answer is lost, see `unknown.rs`; if only the other side fails, its change goes
    /// to the update buffer.
    async fn commit_both(
        &self,
        tenant: &TenantId,
        first: Side,
        tx: Tx,
        other: Option<OtherSide>,
        serialized: Serialized,
    ) -> Result<(), MoveError> {
        match self.commit_pair(first, tx, other, serialized, tenant).await {
            Ok(()) => Ok(()),
            Err(PairError::Failed(e)) => Err(e),
            Err(PairError::Unknown(other, cause)) => {
                Err(self.commit_unknown(tenant, first, *other, cause).await)
            }
        }
    }

    /// Commits the authoritative side, then the other; a failed second commit parks its
    /// change in the update buffer. A first COMMIT that lost its answer is handed back, the
    /// other side still open, for the caller to settle.
    pub(crate) async fn commit_pair(
        &self,
        first: Side,
        tx: Tx,
        other: Option<OtherSide>,
        serialized: Serialized,
        tenant: &TenantId,
    ) -> Result<(), PairError> {
        self.router.ensure_serving().map_err(MoveError::from)?;
        if let Err(cause) = tx.commit().await {
            return Err(match other {
                Some(other) if outcome_unknown(&cause) => {
                    PairError::Unknown(Box::new(other), cause)
                }
                None if outcome_unknown(&cause) => {
                    PairError::Failed(self.one_side_unknown(tenant, first, cause))
                }
                _ => PairError::Failed(self.write_error(first)(cause)),
            });
        }
        self.count_write(first);
        self.mark_applied(&serialized.caught_up).await?;
        let Some(other) = other else {
            return Ok(());
        };
        let committed = match other.written {
            Ok(tx) => tx.commit().await.map_err(self.write_error(other.side)),
            Err(e) => Err(e),
        };
        if committed.is_ok() {
            self.mark_applied(&other.caught_up).await?;
        }
        let settled = match committed {
            Ok(()) if other.diverged => {
                self.count_write(other.side);
                self.diverged(tenant, other.side, &other.key).await
            }
            Ok(()) => {
                self.count_write(other.side);
                Ok(())
            }
            Err(e) => {
                self.buffer(
                    other.side,
                    tenant,
                    &other.key,
                    other.operation,
                    other.payload,
                    &e,
                )
                .await
            }
        };
        Ok(settled?)
    }

    /// A transaction on the non-authoritative side that gives up waiting for a row lock
    /// after a second. Two routers one phase apart write the sides in opposite orders; a
    /// lock wait between them would otherwise be a deadlock the database cannot see (each
    /// waits on the other's open transaction through the application). The loser's change
    /// goes to the update buffer instead.
    async fn second_side(&self, side: Side, pre: Option<Tx>) -> Result<Tx, MoveError> {
        if let Some(tx) = pre {
            return Ok(tx);
        }
        let mut tx = self.begin(side).await?;
        self.lock_timeout(side, &mut tx).await?;
        Ok(tx)
    }

    pub(crate) async fn lock_timeout(&self, side: Side, tx: &mut Tx) -> Result<(), MoveError> {
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut **tx)
            .await
            .map_err(self.write_error(side))?;
        Ok(())
    }

    async fn delete_on(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
        tx: &mut Tx,
    ) -> Result<bool, MoveError> {
        let mut q =
            sqlx::query(AssertSqlSafe(self.delete[index(side)].clone())).bind(tenant.as_str());
        for v in key {
            q = q.bind(v.as_str());
        }
        let done = q.execute(&mut **tx).await.map_err(self.write_error(side))?;
        Ok(done.rows_affected() > 0)
    }

    /// The other side's delete (after the buffer's changes for the key on that side), in a
    /// transaction left open for [`MovedTable::commit_both`].
    pub(crate) async fn delete_other(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
        pre: Option<Tx>,
    ) -> OtherSide {
        let mut caught_up = Vec::new();
        let written = async {
            let mut tx = self.second_side(side, pre).await?;
            caught_up = self.catch_up(side, tenant, key, &mut tx).await?;
            self.delete_on(side, tenant, key, &mut tx).await?;
            Ok(tx)
        }
        .await;
        OtherSide {
            side,
            key: key.clone(),
            operation: "delete",
            payload: serde_json::Value::Null,
            written,
            diverged: false,
            caught_up,
        }
    }

    /// Writes the authoritative side's row image to the other side (never older over newer),
    /// in a transaction left open for [`MovedTable::commit_both`].
    pub(crate) async fn mirror(
        &self,
        side: Side,
        tenant: &TenantId,
        image: &str,
        pre: Option<Tx>,
    ) -> Result<OtherSide, MoveError> {
        let row = parse_row(image)?;
        let key: Key = self
            .plan
            .order
            .iter()
            .map(|c| row.get(c.name.as_str()).map(json_text).unwrap_or_default())
            .collect();
        let mut diverged = false;
        let mut caught_up = Vec::new();
        let written = async {
            let mut tx = self.second_side(side, pre).await?;
            caught_up = self.catch_up(side, tenant, &key, &mut tx).await?;
            let done = sqlx::query(AssertSqlSafe(self.upsert[index(side)].clone()))
                .bind(format!("[{image}]"))
                .execute(&mut *tx)
                .await
                .map_err(self.write_error(side))?;
            // Nothing changed: the other side holds this version already (a repeat), or a
            // newer one (item 2 of the review: that used to pass for success, silently).
            if done.rows_affected() == 0 {
                let newer: Option<Option<bool>> =
                    sqlx::query_scalar(AssertSqlSafe(self.newer[index(side)].clone()))
                        .bind(image)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(self.write_error(side))?;
                diverged = newer.flatten().unwrap_or(false);
            }
            Ok(tx)
        }
        .await;
        Ok(OtherSide {
            side,
            key,
            operation: "upsert",
            payload: serde_json::Value::Object(row),
            written,
            diverged,
            caught_up,
        })
    }

    /// Records that the other side holds a newer version of a row than the authoritative
    /// write just made: validation's mismatch, which holds the next phase change until
    /// `ferry verify` finds the sides equal.
    async fn diverged(&self, tenant: &TenantId, side: Side, key: &Key) -> Result<(), MoveError> {
        let key = serde_json::Value::from(key.clone()).to_string();
        tracing::warn!(migration = %self.migration, tenant = %tenant, %side, key, "the other side holds a newer version than the authoritative write");
        self.store
            .record_mismatch(
                &self.migration,
                tenant,
                &key,
                &format!("{side} holds a newer version than the authoritative write"),
            )
            .await?;
        Ok(())
    }

    async fn buffer(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
        operation: &str,
        payload: serde_json::Value,
        error: &MoveError,
    ) -> Result<(), MoveError> {
        tracing::warn!(migration = %self.migration, tenant = %tenant, %side, "secondary write failed, buffered: {error}");
        let key = serde_json::Value::from(key.clone()).to_string();
        let direction = match side {
            Side::Target => CopyDirection::Forward,
            Side::Source => CopyDirection::Reverse,
        };
        let op = format!("{operation}:{}", direction.as_str());
        self.store
            .enqueue_update(&self.migration, tenant, &key, &op, &payload)
            .await?;
        self.stats.buffered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
