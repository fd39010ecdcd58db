//! A batch across two databases: the rows travel as one JSON array, produced and parsed by
//! PostgreSQL itself so every type round-trips, while the source holds them locked until the
//! destination has committed.

use ferry_domain::TenantId;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row};

use super::{Copied, Copier};
use crate::error::CopyError;
use crate::plan::Key;
use crate::sql::{Statements, bind_key};

impl Copier {
    /// [`Copier::copy_batch`] between two databases: read and lock in `from`, upsert into
    /// `to`, then release.
    pub(super) async fn copy_batch_remote(
        &self,
        sql: &Statements,
        from: &PgPool,
        to: &PgPool,
        tenant: &TenantId,
        after: Option<&Key>,
        limit: u64,
    ) -> Result<Option<Copied>, CopyError> {
        let mut locked = from
            .begin()
            .await
            .map_err(|e| CopyError::db("begin the batch", e))?;
        self.lock_tenant(&mut locked, tenant)
            .await
            .map_err(|e| CopyError::db("lock the tenant", e))?;
        let query = match after {
            None => sqlx::query(AssertSqlSafe(sql.select_first.clone())).bind(tenant.as_str()),
            Some(key) => bind_key(
                sqlx::query(AssertSqlSafe(sql.select_after.clone())).bind(tenant.as_str()),
                key,
            ),
        };
        let rows = query
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *locked)
            .await
            .map_err(|e| CopyError::db("read a batch", e))?;
        if rows.is_empty() {
            locked
                .commit()
                .await
                .map_err(|e| CopyError::db("end the batch", e))?;
            return Ok(None);
        }
        let keys = self.plan.order.len();
        let mut json = String::with_capacity(rows.len() * 256);
        json.push('[');
        let mut last = Vec::with_capacity(keys);
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let text: String = row
                .try_get(0)
                .map_err(|e| CopyError::db("decode a row", e))?;
            json.push_str(&text);
            if i + 1 == rows.len() {
                for k in 0..keys {
                    last.push(
                        row.try_get::<String, _>(k + 1)
                            .map_err(|e| CopyError::db("decode a key", e))?,
                    );
                }
            }
        }
        json.push(']');
        // The destination's own transaction, committed before `from`'s releases the rows and
        // before the checkpoint: a crash before this commit writes nothing, one after it
        // repeats the batch, whose version-guarded upsert then changes nothing.
        let mut written = to
            .begin()
            .await
            .map_err(|e| CopyError::db("begin writing a batch", e))?;
        sqlx::query(AssertSqlSafe(sql.upsert.clone()))
            .bind(json)
            .execute(&mut *written)
            .await
            .map_err(|e| CopyError::db("write a batch", e))?;
        ferry_crash::crash_point!("copy_before_commit");
        written
            .commit()
            .await
            .map_err(|e| CopyError::db("commit a batch", e))?;
        // Only now may concurrent writers touch these rows in `from`.
        locked
            .commit()
            .await
            .map_err(|e| CopyError::db("end the batch", e))?;
        Ok(Some(Copied {
            rows: rows.len() as u64,
            last_key: last,
            digest: None,
        }))
    }
}
