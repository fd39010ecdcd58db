//! A batch when both tables live in one database: one statement reads, writes and returns
//! its range, so no row travels to the client; a plain insert while the destination is clear,
//! the upsert otherwise or after a unique violation says a writer got there first.

use std::sync::Arc;

use ferry_domain::TenantId;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row};

use super::{Copied, Copier};
use crate::error::CopyError;
use crate::plan::Key;
use crate::sql::Statements;

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "23505")
}

impl Copier {
    /// [`Copier::copy_batch`] inside the one database: one statement, no row leaves it.
    pub(super) async fn copy_batch_local(
        &self,
        sql: &Statements,
        pool: &PgPool,
        tenant: &TenantId,
        after: Option<&Key>,
        limit: u64,
    ) -> Result<Option<Copied>, CopyError> {
        let (rows, last, digest) = match self
            .local_attempt(sql, pool, tenant, after, limit, false)
            .await
        {
            // A row was written into the range after a statement found it clear.
            Err(e) if is_unique_violation(&e) => {
                self.local_attempt(sql, pool, tenant, after, limit, true)
                    .await
            }
            other => other,
        }
        .map_err(|e| CopyError::db("copy a batch", e))?;
        match last {
            Some(last) if rows > 0 => {
                let key: Key = serde_json::from_str(&last)
                    .map_err(|e| CopyError::Plan(format!("decode batch key {last}: {e}")))?;
                Ok(Some(Copied {
                    rows: u64::try_from(rows).unwrap_or(0),
                    last_key: key,
                    digest: digest.map(|d| (rows, d)),
                }))
            }
            _ => Ok(None),
        }
    }

    /// One transaction of a local batch, under the tenant lock if configured: the cheap
    /// statement while the destination is clear above the batch, else the general one; or,
    /// after a unique violation, the upsert alone. Returns `(rows, last key, digest)`.
    async fn local_attempt(
        &self,
        sql: &Statements,
        pool: &PgPool,
        tenant: &TenantId,
        after: Option<&Key>,
        limit: u64,
        upsert_only: bool,
    ) -> Result<(i64, Option<String>, Option<i64>), sqlx::Error> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let bind = |statement: &Arc<str>| {
            let mut query = sqlx::query(AssertSqlSafe(statement.clone())).bind(tenant.as_str());
            for value in after.into_iter().flatten() {
                query = query.bind(value.as_str());
            }
            query.bind(limit)
        };
        let (clear, general, upsert) = match after {
            None => (
                &sql.local_clear_first,
                &sql.local_first,
                &sql.local_first_upsert,
            ),
            Some(_) => (
                &sql.local_clear_after,
                &sql.local_after,
                &sql.local_after_upsert,
            ),
        };
        let mut tx = pool.begin().await?;
        self.lock_tenant(&mut tx, tenant).await?;
        let statement = if upsert_only {
            upsert
        } else {
            let row = bind(clear).fetch_one(&mut *tx).await?;
            if row.try_get::<bool, _>(0)? {
                ferry_crash::crash_point!("copy_before_commit");
                tx.commit().await?;
                return Ok((row.try_get(1)?, row.try_get(2)?, row.try_get(3)?));
            }
            general
        };
        let row = bind(statement).fetch_one(&mut *tx).await?;
        ferry_crash::crash_point!("copy_before_commit");
        tx.commit().await?;
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    }
}
