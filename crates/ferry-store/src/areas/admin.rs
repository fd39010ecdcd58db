//! The admin API's side of the store: its bearer tokens and the operator log.
//!
//! Only a token's SHA-256 is stored, under a name that is never reused, so a revoked token
//! cannot come back under its old name. The operator log records every mutating operation
//! (who, what, on what, with what outcome) and, like the audit log, is append-only by trigger.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{QueryContext, Result, StoreError};
use crate::model::{NewOperation, NewToken, OperationRecord, TokenRecord};
use crate::pg::PgStore;
use crate::rows;
use crate::sqlite::{self, SqliteStore};

/// API tokens and the operator log.
#[async_trait]
pub trait AdminStore {
    /// Stores a token's hash under a unique name; `InvalidRequest` if the name is taken.
    async fn create_token(&self, new: &NewToken) -> Result<TokenRecord>;
    /// Every token, revoked ones included, by name.
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Revokes a token for good. False if no live token has that name.
    async fn revoke_token(&self, name: &str) -> Result<bool>;
    /// Appends one entry to the operator log (append-only, like the audit log).
    async fn record_operation(&self, op: &NewOperation) -> Result<i64>;
    /// The operator log from `after_seq` (exclusive), newest last; `limit` most recent if
    /// `after_seq` is 0.
    async fn operations(&self, after_seq: i64, limit: u64) -> Result<Vec<OperationRecord>>;
}

#[async_trait]
impl AdminStore for PgStore {
    async fn create_token(&self, new: &NewToken) -> Result<TokenRecord> {
        let row: Option<rows::TokenRow<DateTime<Utc>>> = sqlx::query_as(
            "INSERT INTO ferry_api_tokens (name, scope, token_sha256, created_by)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING
             RETURNING name, scope, token_sha256, created_by, created_at, revoked_at",
        )
        .bind(&new.name)
        .bind(new.scope.as_str())
        .bind(&new.sha256)
        .bind(&new.created_by)
        .fetch_optional(&self.pool)
        .await
        .doing("create an API token")?;
        let row = row.ok_or_else(|| {
            StoreError::InvalidRequest(format!(
                "a token named {:?} already exists (names are never reused, even revoked)",
                new.name
            ))
        })?;
        rows::token(row, Ok)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let found: Vec<rows::TokenRow<DateTime<Utc>>> = sqlx::query_as(
            "SELECT name, scope, token_sha256, created_by, created_at, revoked_at
             FROM ferry_api_tokens ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .doing("list API tokens")?;
        found.into_iter().map(|r| rows::token(r, Ok)).collect()
    }

    async fn revoke_token(&self, name: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ferry_api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name)
        .execute(&self.pool)
        .await
        .doing("revoke an API token")?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_operation(&self, op: &NewOperation) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO ferry_operator_log (actor, operation, target, outcome)
             VALUES ($1, $2, $3, $4) RETURNING seq",
        )
        .bind(&op.actor)
        .bind(&op.operation)
        .bind(&op.target)
        .bind(&op.outcome)
        .fetch_one(&self.pool)
        .await
        .doing("append to the operator log")
    }

    async fn operations(&self, after_seq: i64, limit: u64) -> Result<Vec<OperationRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found: Vec<rows::OperationRow<DateTime<Utc>>> = sqlx::query_as(if after_seq == 0 {
            "SELECT seq, actor, operation, target, outcome, at FROM ferry_operator_log
                 WHERE seq > $1 ORDER BY seq DESC LIMIT $2"
        } else {
            "SELECT seq, actor, operation, target, outcome, at FROM ferry_operator_log
                 WHERE seq > $1 ORDER BY seq LIMIT $2"
        })
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing("read the operator log")?;
        let mut ops = found
            .into_iter()
            .map(|r| rows::operation(r, Ok))
            .collect::<Result<Vec<_>>>()?;
        if after_seq == 0 {
            ops.reverse();
        }
        Ok(ops)
    }
}

#[async_trait]
impl AdminStore for SqliteStore {
    async fn create_token(&self, new: &NewToken) -> Result<TokenRecord> {
        let row: Option<rows::TokenRow<i64>> = sqlx::query_as(
            "INSERT INTO ferry_api_tokens (name, scope, token_sha256, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING
             RETURNING name, scope, token_sha256, created_by, created_at, revoked_at",
        )
        .bind(&new.name)
        .bind(new.scope.as_str())
        .bind(&new.sha256)
        .bind(&new.created_by)
        .bind(sqlite::now_ms())
        .fetch_optional(&self.pool)
        .await
        .doing("create an API token")?;
        let row = row.ok_or_else(|| {
            StoreError::InvalidRequest(format!(
                "a token named {:?} already exists (names are never reused, even revoked)",
                new.name
            ))
        })?;
        rows::token(row, rows::from_millis)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let found: Vec<rows::TokenRow<i64>> = sqlx::query_as(
            "SELECT name, scope, token_sha256, created_by, created_at, revoked_at
             FROM ferry_api_tokens ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .doing("list API tokens")?;
        found
            .into_iter()
            .map(|r| rows::token(r, rows::from_millis))
            .collect()
    }

    async fn revoke_token(&self, name: &str) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE ferry_api_tokens SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        )
        .bind(name)
        .bind(sqlite::now_ms())
        .execute(&self.pool)
        .await
        .doing("revoke an API token")?;
        Ok(done.rows_affected() == 1)
    }

    async fn record_operation(&self, op: &NewOperation) -> Result<i64> {
        sqlx::query_scalar(
            "INSERT INTO ferry_operator_log (actor, operation, target, outcome, at)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING seq",
        )
        .bind(&op.actor)
        .bind(&op.operation)
        .bind(&op.target)
        .bind(&op.outcome)
        .bind(sqlite::now_ms())
        .fetch_one(&self.pool)
        .await
        .doing("append to the operator log")
    }

    async fn operations(&self, after_seq: i64, limit: u64) -> Result<Vec<OperationRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found: Vec<rows::OperationRow<i64>> = sqlx::query_as(if after_seq == 0 {
            "SELECT seq, actor, operation, target, outcome, at FROM ferry_operator_log
                 WHERE seq > ?1 ORDER BY seq DESC LIMIT ?2"
        } else {
            "SELECT seq, actor, operation, target, outcome, at FROM ferry_operator_log
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        })
        .bind(after_seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .doing("read the operator log")?;
        let mut ops = found
            .into_iter()
            .map(|r| rows::operation(r, rows::from_millis))
            .collect::<Result<Vec<_>>>()?;
        if after_seq == 0 {
            ops.reverse();
        }
        Ok(ops)
    }
}
