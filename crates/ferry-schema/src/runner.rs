//! Runs `start`, `complete` and `rollback`: each step under `lock_timeout`, retried with
//! backoff and jitter when a lock is not granted, recorded done in the application's
//! database (`ferry_schema.steps`) in the step's own transaction, so running a command again
//! after a crash finishes it and never repeats a step that committed.
//!
//! The migration's state lives beside the tables it changes (`ferry_schema.migrations`), so
//! the state and the DDL commit together; the plan is stored at `start` and a later command
//! with a different plan is refused.

use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{AssertSqlSafe, Connection};

use ferry_domain::MigrationId;

use crate::catalogue::Catalogue;
use crate::error::{DbContext, SchemaError};
use crate::plan::{Plan, Resolved, Step, StepKind};
use crate::sync::FERRY_SCHEMA;

/// Where a schema change stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationState {
    Starting,
    Started,
    Completing,
    Completed,
    RollingBack,
    RolledBack,
}

impl MigrationState {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationState::Starting => "starting",
            MigrationState::Started => "started",
            MigrationState::Completing => "completing",
            MigrationState::Completed => "completed",
            MigrationState::RollingBack => "rolling_back",
            MigrationState::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Option<MigrationState> {
        [
            MigrationState::Starting,
            MigrationState::Started,
            MigrationState::Completing,
            MigrationState::Completed,
            MigrationState::RollingBack,
            MigrationState::RolledBack,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Complete,
    Rollback,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Complete => "complete",
            Action::Rollback => "rollback",
        }
    }
}

/// What an action did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Steps run now.
    pub ran: Vec<String>,
    /// Steps a previous, interrupted run had already done.
    pub skipped: Vec<String>,
    /// Lock timeouts retried.
    pub retries: u32,
}

pub struct Runner {
    pool: PgPool,
    resolved: Resolved,
    plan: serde_json::Value,
    /// The catalogue the plan was resolved against: stored at `start`, so every later
    /// command resolves the same steps (the live catalogue then holds the expanded shape).
    catalogue: Catalogue,
}

/// Parses the plan and resolves it against the catalogue `start` stored, or, before a start
/// (or after a rollback), the live one. Every command goes through here.
pub async fn open(
    pool: PgPool,
    migration: &MigrationId,
    plan_json: &serde_json::Value,
) -> Result<Runner, SchemaError> {
    let plan = Plan::from_json(plan_json).map_err(SchemaError::Plan)?;
    let catalogue = match stored_catalogue(&pool, migration.as_str()).await? {
        Some(c) => c,
        None => Catalogue::read(&pool, &plan.settings.schema).await?,
    };
    let resolved = plan
        .resolve(migration, &catalogue)
        .map_err(SchemaError::Plan)?;
    Ok(Runner {
        pool,
        resolved,
        plan: plan_json.clone(),
        catalogue,
    })
}

async fn stored_catalogue(
    pool: &PgPool,
    migration: &str,
) -> Result<Option<Catalogue>, SchemaError> {
    match state(pool, migration).await? {
        None | Some(MigrationState::RolledBack) => return Ok(None),
        Some(_) => {}
    }
    let text: String =
        sqlx::query_scalar("SELECT catalogue FROM ferry_schema.migrations WHERE migration = $1")
            .bind(migration)
            .fetch_one(pool)
            .await
            .db("read the catalogue stored at start")?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        SchemaError::Refused(format!(
            "ferry_schema.migrations holds an unreadable catalogue for {migration}: {e}"
        ))
    })
}

const BOOKKEEPING: &str = "
CREATE SCHEMA IF NOT EXISTS ferry_schema;
CREATE TABLE IF NOT EXISTS ferry_schema.migrations (
    migration text PRIMARY KEY,
    schema text NOT NULL,
    version_schema text NOT NULL,
    state text NOT NULL,
    plan text NOT NULL,
    catalogue text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ferry_schema.steps (
    migration text NOT NULL,
    action text NOT NULL,
    step integer NOT NULL,
    label text NOT NULL,
    done_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration, action, step)
);
CREATE OR REPLACE FUNCTION ferry_schema.is_version(version text, base text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    WITH path AS (
        SELECT btrim(s, ' \"') AS name, ord
        FROM unnest(string_to_array(current_setting('search_path'), ',')) WITH ORDINALITY AS p(s, ord)
    )
    SELECT coalesce((SELECT min(ord) FROM path WHERE name = version)
                    < coalesce((SELECT min(ord) FROM path WHERE name = base), 2147483647), false)
$$;";

impl Runner {
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// The migration's state, or `None` before its first `start`.
    pub async fn state(&self) -> Result<Option<MigrationState>, SchemaError> {
        state(&self.pool, self.resolved.migration.as_str()).await
    }

    pub async fn start(&self) -> Result<Report, SchemaError> {
        self.run(Action::Start).await
    }

    pub async fn complete(&self) -> Result<Report, SchemaError> {
        self.run(Action::Complete).await
    }

    pub async fn rollback(&self) -> Result<Report, SchemaError> {
        self.run(Action::Rollback).await
    }

    async fn run(&self, action: Action) -> Result<Report, SchemaError> {
        let mut conn = self.pool.acquire().await.db("connect")?;
        setup(&mut conn).await?;
        let migration = self.resolved.migration.as_str();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext($1))")
            .bind(format!("ferry_schema:{migration}"))
            .fetch_one(&mut *conn)
            .await
            .db("take the migration's lock")?;
        if !locked {
            return Err(SchemaError::Refused(format!(
                "another `ferry schema` command is running on {migration}; wait for it"
            )));
        }
        let result = self.run_locked(&mut conn, action).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext($1))")
            .bind(format!("ferry_schema:{migration}"))
            .execute(&mut *conn)
            .await;
        result
    }

    async fn run_locked(
        &self,
        conn: &mut PgConnection,
        action: Action,
    ) -> Result<Report, SchemaError> {
        let Some(steps) = self.enter(conn, action).await? else {
            return Ok(Report::default());
        };
        let migration = self.resolved.migration.as_str();
        let mut report = Report::default();
        for (n, step) in steps.iter().enumerate() {
            if step_done(conn, migration, action, n).await? {
                report.skipped.push(step.label.clone());
                continue;
            }
            report.retries += self.run_step(conn, action, n, step).await?;
            report.ran.push(step.label.clone());
            ferry_crash::crash_point!("schema_step_done");
        }
        let done = match action {
            Action::Start => MigrationState::Started,
            Action::Complete => MigrationState::Completed,
            Action::Rollback => MigrationState::RolledBack,
        };
        set_state(conn, migration, done).await?;
        Ok(report)
    }

    /// Checks the action may run from the current state, moves to its running state and
    /// returns its steps, or `None` if it is already done.
    async fn enter(
        &self,
        conn: &mut PgConnection,
        action: Action,
    ) -> Result<Option<&[Step]>, SchemaError> {
        use MigrationState::*;
        let migration = self.resolved.migration.as_str();
        let stored: Option<(String, String)> =
            sqlx::query_as("SELECT state, plan FROM ferry_schema.migrations WHERE migration = $1")
                .bind(migration)
                .fetch_optional(&mut *conn)
                .await
                .db("read the migration's state")?;
        let stored = stored.map(|(state, plan)| {
            let plan: serde_json::Value = serde_json::from_str(&plan).unwrap_or_default();
            (state, plan)
        });
        let current = match &stored {
            Some((s, _)) => Some(MigrationState::parse(s).ok_or_else(|| {
                SchemaError::Refused(format!(
                    "ferry_schema.migrations holds an unknown state {s:?}"
                ))
            })?),
            None => None,
        };
        if let (Some((_, plan)), Some(state)) = (&stored, current)
            && state != RolledBack
            && plan != &self.plan
        {
            return Err(SchemaError::Refused(format!(
                "the plan of {migration} changed since it was started; roll back first, or create a new migration for the new plan"
            )));
        }
        let refuse = |why: &str| Err(SchemaError::Refused(format!("{migration}: {why}")));
        let state_name = current.map(|s| s.as_str()).unwrap_or("not started");
        match (action, current) {
            (Action::Start, None | Some(RolledBack)) => {
                self.begin_start(conn).await?;
                Ok(Some(&self.resolved.start))
            }
            (Action::Start, Some(Starting)) => Ok(Some(&self.resolved.start)),
            (Action::Start, Some(Started)) => Ok(None),
            (Action::Start, Some(RollingBack)) => {
                refuse("a rollback is unfinished: run `ferry schema rollback` again first")
            }
            (Action::Start, Some(Completing | Completed)) => {
                refuse("it is completed (or completing); a new change needs a new migration")
            }
            (Action::Complete, Some(Started | Completing)) => {
                set_state(conn, migration, Completing).await?;
                Ok(Some(&self.resolved.complete))
            }
            (Action::Complete, Some(Completed)) => Ok(None),
            (Action::Complete, _) => refuse(&format!(
                "cannot complete from state {state_name}: run `ferry schema start` first"
            )),
            (Action::Rollback, Some(Starting | Started | RollingBack)) => {
                set_state(conn, migration, RollingBack).await?;
                Ok(Some(&self.resolved.rollback))
            }
            (Action::Rollback, Some(Completing)) => {
                let contracted =
                    step_done(conn, migration, Action::Complete, self.contract_step()).await?;
                if contracted {
                    return refuse(
                        "its contract has committed: the old shape is gone, so there is nothing to roll back to",
                    );
                }
                set_state(conn, migration, RollingBack).await?;
                Ok(Some(&self.resolved.rollback))
            }
            (Action::Rollback, Some(RolledBack)) => Ok(None),
            (Action::Rollback, Some(Completed)) => refuse(
                "it is completed: the old shape is gone; write a new migration to change it back",
            ),
            (Action::Rollback, None) => refuse("it was never started"),
        }
    }

    fn contract_step(&self) -> usize {
        self.resolved
            .complete
            .iter()
            .position(|s| s.label == "contract")
            .unwrap_or(usize::MAX)
    }

    async fn begin_start(&self, conn: &mut PgConnection) -> Result<(), SchemaError> {
        let r = &self.resolved;
        let mut tx = conn.begin().await.db("begin")?;
        sqlx::query("DELETE FROM ferry_schema.steps WHERE migration = $1")
            .bind(r.migration.as_str())
            .execute(&mut *tx)
            .await
            .db("forget an earlier run's steps")?;
        sqlx::query(
            "INSERT INTO ferry_schema.migrations (migration, schema, version_schema, state, plan, catalogue)
             VALUES ($1, $2, $3, 'starting', $4, $5)
             ON CONFLICT (migration) DO UPDATE SET state = 'starting', plan = EXCLUDED.plan,
                 catalogue = EXCLUDED.catalogue,
                 schema = EXCLUDED.schema, version_schema = EXCLUDED.version_schema, updated_at = now()",
        )
        .bind(r.migration.as_str())
        .bind(&r.settings.schema)
        .bind(&r.version_schema)
        .bind(self.plan.to_string())
        .bind(serde_json::to_string(&self.catalogue).unwrap_or_default())
        .execute(&mut *tx)
        .await
        .db("record the migration")?;
        tx.commit().await.db("commit")
    }

    /// Runs one step; returns the lock timeouts it retried.
    async fn run_step(
        &self,
        conn: &mut PgConnection,
        action: Action,
        n: usize,
        step: &Step,
    ) -> Result<u32, SchemaError> {
        let settings = &self.resolved.settings;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = match step.kind {
                StepKind::Transaction => self.try_transaction(conn, action, n, step).await,
                StepKind::Concurrent => self.try_concurrent(conn, action, n, step).await,
                StepKind::Check => return self.check(conn, action, n, step).await.map(|()| 0),
            };
            match outcome {
                Ok(()) => return Ok(attempt - 1),
                Err(e) if is_lock_timeout(&e) && attempt < settings.ddl_attempts => {
                    tracing::warn!(step = %step.label, attempt, "lock not granted within lock_timeout; retrying");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(e) if is_lock_timeout(&e) => {
                    return Err(SchemaError::LockTimeout {
                        step: step.label.clone(),
                        attempts: attempt,
                        lock_timeout_ms: settings.lock_timeout_ms,
                    });
                }
                Err(source) => {
                    return Err(SchemaError::Step {
                        step: step.label.clone(),
                        source,
                    });
                }
            }
        }
    }

    async fn try_transaction(
        &self,
        conn: &mut PgConnection,
        action: Action,
        n: usize,
        step: &Step,
    ) -> Result<(), sqlx::Error> {
        let mut tx = conn.begin().await?;
        sqlx::query(AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{}ms'",
            self.resolved.settings.lock_timeout_ms
        )))
        .execute(&mut *tx)
        .await?;
        for statement in &step.statements {
            sqlx::raw_sql(AssertSqlSafe(statement.as_str()))
                .execute(&mut *tx)
                .await?;
        }
        record_step(
            &mut tx,
            self.resolved.migration.as_str(),
            action,
            n,
            &step.label,
        )
        .await?;
        tx.commit().await
    }

    async fn try_concurrent(
        &self,
        conn: &mut PgConnection,
        action: Action,
        n: usize,
        step: &Step,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(AssertSqlSafe(format!(
            "SET lock_timeout = '{}ms'",
            self.resolved.settings.lock_timeout_ms
        )))
        .execute(&mut *conn)
        .await?;
        let result = async {
            for statement in &step.statements {
                sqlx::raw_sql(AssertSqlSafe(statement.as_str()))
                    .execute(&mut *conn)
                    .await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        sqlx::query("RESET lock_timeout")
            .execute(&mut *conn)
            .await?;
        result?;
        let mut tx = conn.begin().await?;
        record_step(
            &mut tx,
            self.resolved.migration.as_str(),
            action,
            n,
            &step.label,
        )
        .await?;
        tx.commit().await
    }

    async fn check(
        &self,
        conn: &mut PgConnection,
        action: Action,
        n: usize,
        step: &Step,
    ) -> Result<(), SchemaError> {
        let mut failing = 0i64;
        for statement in &step.statements {
            let count: i64 = sqlx::query_scalar(AssertSqlSafe(statement.as_str()))
                .fetch_one(&mut *conn)
                .await
                .map_err(|source| SchemaError::Step {
                    step: step.label.clone(),
                    source,
                })?;
            failing += count;
        }
        if failing > 0 {
            return Err(SchemaError::Refused(format!(
                "check failed: {} — {failing} row(s) do not; run `ferry schema backfill` for their tenants (`ferry schema status` lists tenants not backfilled)",
                step.label
            )));
        }
        let mut tx = conn.begin().await.db("begin")?;
        record_step(
            &mut tx,
            self.resolved.migration.as_str(),
            action,
            n,
            &step.label,
        )
        .await
        .db("record the step")?;
        tx.commit().await.db("commit")
    }
}

/// Creates Ferry's bookkeeping in the application's database, once, under a lock (two
/// commands starting at once would otherwise race on `CREATE OR REPLACE FUNCTION`).
pub async fn setup(conn: &mut PgConnection) -> Result<(), SchemaError> {
    let mut tx = conn.begin().await.db("begin")?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ferry_schema:setup'))")
        .execute(&mut *tx)
        .await
        .db("lock the bookkeeping's setup")?;
    sqlx::raw_sql(BOOKKEEPING)
        .execute(&mut *tx)
        .await
        .db(format!("create the {FERRY_SCHEMA} bookkeeping schema"))?;
    tx.commit().await.db("commit")
}

/// The state of a migration, or `None` before its first `start` (or before any).
pub async fn state(pool: &PgPool, migration: &str) -> Result<Option<MigrationState>, SchemaError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('ferry_schema.migrations') IS NOT NULL")
            .fetch_one(pool)
            .await
            .db("look for ferry_schema.migrations")?;
    if !exists {
        return Ok(None);
    }
    let s: Option<String> =
        sqlx::query_scalar("SELECT state FROM ferry_schema.migrations WHERE migration = $1")
            .bind(migration)
            .fetch_optional(pool)
            .await
            .db("read the migration's state")?;
    Ok(s.and_then(|s| MigrationState::parse(&s)))
}

async fn set_state(
    conn: &mut PgConnection,
    migration: &str,
    state: MigrationState,
) -> Result<(), SchemaError> {
    sqlx::query(
        "UPDATE ferry_schema.migrations SET state = $2, updated_at = now() WHERE migration = $1",
    )
    .bind(migration)
    .bind(state.as_str())
    .execute(&mut *conn)
    .await
    .db("record the migration's state")?;
    Ok(())
}

async fn step_done(
    conn: &mut PgConnection,
    migration: &str,
    action: Action,
    n: usize,
) -> Result<bool, SchemaError> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ferry_schema.steps WHERE migration = $1 AND action = $2 AND step = $3)",
    )
    .bind(migration)
    .bind(action.as_str())
    .bind(n as i32)
    .fetch_one(&mut *conn)
    .await
    .db("read the steps done")
}

async fn record_step(
    conn: &mut PgConnection,
    migration: &str,
    action: Action,
    n: usize,
    label: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO ferry_schema.steps (migration, action, step, label) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(migration)
    .bind(action.as_str())
    .bind(n as i32)
    .bind(label)
    .execute(conn)
    .await?;
    Ok(())
}

/// `lock_not_available` (a `lock_timeout`) or a deadlock: the step is retried whole.
fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "55P03" || c == "40P01")
}

/// 100 ms doubling to at most 5 s, with ±50% jitter so two runners do not retry in step.
fn backoff(attempt: u32) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.5 + f64::from(nanos % 1000) / 1000.0;
    Duration::from_millis((base as f64 * jitter) as u64)
}
