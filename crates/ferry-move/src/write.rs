//! The write half of [`MovedTable`]: insert, update and delete, each to the authoritative
//! side first and then to the other side, whose failures are parked in the update buffer.

use ferry_domain::{Side, TenantId};
use ferry_router::RouteOp;
use ferry_store::CopyDirection;
use sqlx::AssertSqlSafe;

use crate::route::RouteDecision;
use crate::table::{Column, Key, MoveError, MovedTable, Row, index, json_text, parse_row};
use std::sync::atomic::Ordering;

impl MovedTable {
    /// Inserts a row (its tenant column is set to `tenant`, its version to the first one).
    pub async fn insert(&self, tenant: &TenantId, row: Row) -> Result<Row, MoveError> {
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
        let payload = serde_json::Value::Object(row).to_string();
        // The authoritative write's transaction stays open (holding the row) until the other
        // side has the same row: two requests on one key then reach both sides in the same
        // order, and a delete cannot slip between a write and its mirror.
        let mut tx = self
            .pool(first)
            .begin()
            .await
            .map_err(self.write_error(first))?;
        let sql = self.shaped(true, first, &columns);
        let stored: String = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(&payload)
            .fetch_one(&mut *tx)
            .await
            .map_err(self.write_error(first))?;
        if let Some(second) = then {
            self.mirror(second, tenant, &stored).await?;
        }
        tx.commit().await.map_err(self.write_error(first))?;
        self.count_write(first);
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
        let mut tx = self
            .pool(first)
            .begin()
            .await
            .map_err(self.write_error(first))?;
        let stored = q
            .bind(serde_json::Value::Object(changes).to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(self.write_error(first))?;
        let Some(stored) = stored else {
            tx.commit().await.map_err(self.write_error(first))?;
            return Ok(None);
        };
        if let Some(second) = then {
            self.mirror(second, tenant, &stored).await?;
        }
        tx.commit().await.map_err(self.write_error(first))?;
        self.count_write(first);
        drop(snapshot);
        parse_row(&stored).map(Some)
    }

    /// Deletes a row; whether it existed.
    pub async fn delete(&self, tenant: &TenantId, key: &[&str]) -> Result<bool, MoveError> {
        let key = self.check_key(key)?;
        let snapshot = self.router.snapshot()?;
        let phase = snapshot
            .phase(self.migration.as_str(), tenant.as_str())
            .phase;
        let decision = RouteDecision::write(phase);
        self.record(tenant, RouteOp::Write, &decision);
        let (first, then) = decision.write_sides();
        let mut tx = self
            .pool(first)
            .begin()
            .await
            .map_err(self.write_error(first))?;
        // Held until both sides are done: a copy batch that could write this row back waits,
        // or finished before and its copy is deleted with the rest.
        if self.lock_deletes && ferry_copier::tenant_lock::guards_deletes(phase, first) {
            ferry_copier::tenant_lock::take(&mut tx, &self.migration, tenant, false)
                .await
                .map_err(self.write_error(first))?;
        }
        let existed = self.delete_on(first, tenant, &key, &mut tx).await?;
        if let Some(second) = then {
            let result = async {
                let mut other = self.second_side(second).await?;
                self.delete_on(second, tenant, &key, &mut other).await?;
                other.commit().await.map_err(self.write_error(second))
            }
            .await;
            if let Err(e) = result {
                self.buffer(second, tenant, &key, "delete", serde_json::Value::Null, &e)
                    .await?;
            }
        }
        tx.commit().await.map_err(self.write_error(first))?;
        drop(snapshot);
        Ok(existed)
    }

    /// A transaction on the non-authoritative side that gives up waiting for a row lock
    /// after a second. Two routers one phase apart write the sides in opposite orders; a
    /// lock wait between them would otherwise be a deadlock the database cannot see (each
    /// waits on the other's open transaction through the application). The loser's change
    /// goes to the update buffer instead.
    async fn second_side(
        &self,
        side: Side,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, MoveError> {
        let mut tx = self
            .pool(side)
            .begin()
            .await
            .map_err(self.write_error(side))?;
        sqlx::query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut *tx)
            .await
            .map_err(self.write_error(side))?;
        Ok(tx)
    }

    async fn delete_on(
        &self,
        side: Side,
        tenant: &TenantId,
        key: &Key,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ) -> Result<bool, MoveError> {
        let mut q =
            sqlx::query(AssertSqlSafe(self.delete[index(side)].clone())).bind(tenant.as_str());
        for v in key {
            q = q.bind(v.as_str());
        }
        let done = q.execute(&mut **tx).await.map_err(self.write_error(side))?;
        self.count_write(side);
        Ok(done.rows_affected() > 0)
    }

    /// Writes the authoritative side's row image to the other side (never older over newer);
    /// a failure is buffered, not returned.
    async fn mirror(&self, side: Side, tenant: &TenantId, image: &str) -> Result<(), MoveError> {
        let result = async {
            let mut tx = self.second_side(side).await?;
            sqlx::query(AssertSqlSafe(self.upsert[index(side)].clone()))
                .bind(format!("[{image}]"))
                .execute(&mut *tx)
                .await
                .map_err(self.write_error(side))?;
            tx.commit().await.map_err(self.write_error(side))
        }
        .await;
        match result {
            Ok(()) => {
                self.count_write(side);
                Ok(())
            }
            Err(e) => {
                let row = parse_row(image)?;
                let key: Key = self
                    .plan
                    .order
                    .iter()
                    .map(|c| row.get(c.name.as_str()).map(json_text).unwrap_or_default())
                    .collect();
                let payload: serde_json::Value =
                    serde_json::from_str(image).unwrap_or(serde_json::Value::Null);
                self.buffer(side, tenant, &key, "upsert", payload, &e).await
            }
        }
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
