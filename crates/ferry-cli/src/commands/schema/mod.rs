//! `ferry schema …`: an expand–contract schema change run from its plan. The work is
//! `ferry_schema`'s (the runner, the backfill); this module loads the plan from the control
//! store, opens the application's database, refuses what the tenants' phases forbid, records
//! the mutating commands in the operator log and picks the output and the exit code.
//!
//! - `validate`, `plan`, `start`, `complete`, `rollback`: here;
//! - `backfill`: [`backfill`], with its progress bars and summary;
//! - `status`: [`status`].

mod backfill;
mod status;

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use ferry_api::ops::ChangeOptions;
use ferry_domain::{Action, Cohort, MigrationId, Phase, TenantId};
use ferry_schema::runner::Report;
use ferry_schema::{MigrationState, PlanError, Runner, SchemaError};
use ferry_store::{MigrationKind, NewOperation};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::args::{AppUrl, SchemaCmd};
use crate::context::Context;
use crate::exit;

pub async fn run(ctx: &Context, cmd: SchemaCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SchemaCmd::Validate { migration, url } => validate(ctx, &migration, &url).await,
        SchemaCmd::Plan { migration, url } => plan(ctx, &migration, &url).await,
        SchemaCmd::Start { migration, url } => start(ctx, &migration, &url).await,
        SchemaCmd::Backfill {
            migration,
            tenants,
            url,
            follow,
            interval,
            parallel,
        } => {
            let change = Change::load(ctx, &migration, &url).await?;
            let every = follow.then(|| Duration::from_secs(interval));
            backfill::run(ctx, &change, tenants, every, parallel).await
        }
        SchemaCmd::Complete {
            migration,
            url,
            force,
            reason,
        } => {
            let reason = reason.unwrap_or_default().trim().to_owned();
            anyhow::ensure!(
                !force || !reason.is_empty(),
                "--force needs a --reason: say why tenants that are not at target_only may lose the old shape (it is recorded in the operator log)"
            );
            complete(ctx, &migration, &url, force.then_some(reason)).await
        }
        SchemaCmd::Rollback { migration, url } => rollback(ctx, &migration, &url).await,
        SchemaCmd::Status {
            migration,
            url,
            json,
        } => {
            let change = Change::load(ctx, &migration, &url).await?;
            status::show(ctx, &change, json).await
        }
    }
}

/// Every problem of a plan, one a line.
#[derive(Debug)]
pub struct PlanErrors(pub Vec<PlanError>);

impl fmt::Display for PlanErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the plan is invalid ({} problem(s)):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PlanErrors {}

/// A library error for the CLI's edge: a refused plan keeps each of its errors on a line.
pub fn schema_error(e: SchemaError) -> anyhow::Error {
    match e {
        SchemaError::Plan(errors) => PlanErrors(errors).into(),
        other => other.into(),
    }
}

/// A schema-change migration's plan and the application's database.
pub(crate) struct Change {
    pub migration: MigrationId,
    pub plan: serde_json::Value,
    pub pool: PgPool,
}

impl Change {
    async fn load(ctx: &Context, migration: &MigrationId, url: &AppUrl) -> anyhow::Result<Change> {
        let record = ctx
            .store
            .migration(migration)
            .await
            .with_context(|| format!("read migration {migration}"))?;
        anyhow::ensure!(
            record.kind == MigrationKind::SchemaChange,
            "migration {migration} is a {} migration; `ferry schema` runs schema-change migrations",
            record.kind.as_str()
        );
        anyhow::ensure!(
            record.config.as_object().is_some_and(|o| !o.is_empty()),
            "migration {migration} has no plan: create it with `ferry migration create {migration} --kind schema-change --config @plan.json` (see docs/schema-changes.md)"
        );
        Ok(Change {
            migration: migration.clone(),
            plan: record.config,
            pool: connect(&url.source_url).await?,
        })
    }

    /// The plan resolved (against the catalogue `start` stored, or the live one before it).
    async fn runner(&self) -> anyhow::Result<Runner> {
        ferry_schema::runner::open(self.pool.clone(), &self.migration, &self.plan)
            .await
            .map_err(schema_error)
            .with_context(|| format!("resolve the plan of {}", self.migration))
    }

    async fn state(&self) -> anyhow::Result<Option<MigrationState>> {
        ferry_schema::runner::state(&self.pool, self.migration.as_str())
            .await
            .map_err(schema_error)
            .context("read the change's state in the application's database")
    }
}

/// The application's database, named in `pg_stat_activity` as `ferry-schema`.
async fn connect(url: &str) -> anyhow::Result<PgPool> {
    let redacted = ferry_store::redact_url(url);
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("read --source-url {redacted}"))?
        .application_name("ferry-schema");
    PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .with_context(|| format!("connect to the application database {redacted}"))
}

fn state_name(state: Option<MigrationState>) -> &'static str {
    state.map_or("not started", MigrationState::as_str)
}

async fn validate(ctx: &Context, m: &MigrationId, url: &AppUrl) -> anyhow::Result<ExitCode> {
    let change = Change::load(ctx, m, url).await?;
    let runner = match ferry_schema::runner::open(change.pool.clone(), m, &change.plan).await {
        Ok(runner) => runner,
        Err(SchemaError::Plan(errors)) => {
            eprintln!(
                "error: the plan of {m} is invalid ({} problem(s)):",
                errors.len()
            );
            for e in &errors {
                eprintln!("  {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(schema_error(e)).with_context(|| format!("check the plan of {m}")),
    };
    let r = runner.resolved();
    let operations = change.plan["operations"].as_array().map_or(0, Vec::len);
    println!("valid: {operations} operations");
    println!(
        "  start {} step(s), complete {}, rollback {}; the backfill writes {} table(s)",
        r.start.len(),
        r.complete.len(),
        r.rollback.len(),
        r.backfills.len()
    );
    println!("  state: {}", state_name(change.state().await?));
    Ok(ExitCode::SUCCESS)
}

async fn plan(ctx: &Context, m: &MigrationId, url: &AppUrl) -> anyhow::Result<ExitCode> {
    let change = Change::load(ctx, m, url).await?;
    let runner = change.runner().await?;
    print!("{}", runner.resolved().describe());
    let ops = change.plan["operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, op) in ops.iter().enumerate() {
        if op["op"] == "add_enum_value" {
            println!(
                "-- note: operations[{i}] (add_enum_value): PostgreSQL cannot remove a value from an enum; rollback leaves it in place"
            );
        }
    }
    println!("-- state: {}", state_name(change.state().await?));
    Ok(ExitCode::SUCCESS)
}

async fn start(ctx: &Context, m: &MigrationId, url: &AppUrl) -> anyhow::Result<ExitCode> {
    let change = Change::load(ctx, m, url).await?;
    let runner = change.runner().await?;
    if matches!(
        change.state().await?,
        None | Some(MigrationState::RolledBack)
    ) {
        let past = tenants_where(ctx, m, |p| p != Phase::Legacy).await?;
        if !past.is_empty() {
            refuse(
                &format!(
                    "{m} is not started, but {} tenant(s) are past legacy; their backfill would count as done without the new columns filled. Roll them back to legacy first (`ferry rollout {m} --tenants … --action rollback`):",
                    past.len()
                ),
                &past,
            );
            return Ok(ExitCode::from(exit::REFUSED));
        }
    }
    let result = runner.start().await;
    log(ctx, "schema.start", m, outcome(&result, None)).await;
    let report = match result {
        Ok(report) => report,
        Err(e) => return failed(e, &format!("start {m}")),
    };
    print_report(m, "started", &report);
    let r = runner.resolved();
    println!(
        "the new version: SET search_path TO {}, {}",
        r.version_schema, r.settings.schema
    );
    println!(
        "  (the old version keeps search_path {}; ferry_schema::VersionedTable picks per tenant by phase)",
        r.settings.schema
    );
    println!(
        "next: advance tenants to dual_write (`ferry rollout {m} --percent 5`), then `ferry schema backfill {m}`"
    );
    Ok(ExitCode::SUCCESS)
}

async fn complete(
    ctx: &Context,
    m: &MigrationId,
    url: &AppUrl,
    forced: Option<String>,
) -> anyhow::Result<ExitCode> {
    let change = Change::load(ctx, m, url).await?;
    let runner = change.runner().await?;
    let not_ready = tenants_where(ctx, m, |p| {
        !matches!(p, Phase::TargetOnly | Phase::Complete)
    })
    .await?;
    let already = change.state().await? == Some(MigrationState::Completed);
    let forcing = !not_ready.is_empty() && !already;
    if forcing && forced.is_none() {
        let why = format!(
            "{} tenant(s) are not at target_only; they still read or write the old shape, which complete drops. Advance them first (or --force --reason TEXT):",
            not_ready.len()
        );
        refuse(&why, &not_ready);
        log(ctx, "schema.complete", m, format!("refused: {why}")).await;
        return Ok(ExitCode::from(exit::REFUSED));
    }
    let note = match (&forced, forcing) {
        (Some(reason), true) => {
            eprintln!(
                "FORCED: completing although {} tenant(s) are not at target_only (they lose the old shape, and a tenant never backfilled keeps NULL in nullable columns the plan rewrote); recorded in the operator log",
                not_ready.len()
            );
            Some(format!(
                "forced past {} tenant(s) not at target_only ({}): {reason}",
                not_ready.len(),
                listed(&not_ready, 10)
            ))
        }
        _ => None,
    };
    let result = runner.complete().await;
    log(ctx, "schema.complete", m, outcome(&result, note.as_deref())).await;
    let report = match result {
        Ok(report) => report,
        Err(e) => return failed(e, &format!("complete {m}")),
    };
    print_report(m, "completed", &report);
    println!(
        "the tables have the new shape; the version schema {} is gone (a search_path naming it skips it)",
        runner.resolved().version_schema
    );
    advance_to_complete(ctx, m).await
}

/// After the contract: every tenant at target_only to complete, through the phase engine.
async fn advance_to_complete(ctx: &Context, m: &MigrationId) -> anyhow::Result<ExitCode> {
    let ready = tenants_where(ctx, m, |p| p == Phase::TargetOnly).await?;
    if ready.is_empty() {
        println!("no tenant at target_only to advance to complete");
        return Ok(ExitCode::SUCCESS);
    }
    let options = ChangeOptions {
        reason: format!("schema change {m} completed"),
        force: false,
        dry_run: false,
        from_phase: Some(Phase::TargetOnly),
        wait: Duration::from_secs(30),
    };
    let cohort = Cohort::Explicit(ready.into_iter().map(|(t, _)| t).collect());
    let view = ctx
        .ops
        .rollout(&ctx.actor, m, &cohort, Action::Advance, &options, |_, _| {})
        .await
        .with_context(|| format!("advance {m}'s tenants at target_only to complete"))?;
    super::change::print_report(&view);
    Ok(if !view.refused.is_empty() {
        ExitCode::from(exit::REFUSED)
    } else if !view.pending_acknowledgement.is_empty() {
        ExitCode::from(exit::NOT_EFFECTIVE)
    } else {
        ExitCode::SUCCESS
    })
}

async fn rollback(ctx: &Context, m: &MigrationId, url: &AppUrl) -> anyhow::Result<ExitCode> {
    let change = Change::load(ctx, m, url).await?;
    let runner = change.runner().await?;
    let reading_new = tenants_where(ctx, m, |p| {
        matches!(
            p,
            Phase::TargetPrimary | Phase::TargetOnly | Phase::Complete
        )
    })
    .await?;
    if !reading_new.is_empty() {
        let why = format!(
            "{} tenant(s) are at target_primary or later and read the new shape, which rollback drops. Roll them back first:",
            reading_new.len()
        );
        refuse(&why, &reading_new);
        eprintln!(
            "hint: `ferry tenant rollback {m} TENANT` walks a tenant back (from target_only it stops at target_primary until `ferry schema backfill {m} --tenant TENANT` records the reverse sync; then run it again), or `ferry rollout {m} --tenants A,B --action rollback`"
        );
        log(ctx, "schema.rollback", m, format!("refused: {why}")).await;
        return Ok(ExitCode::from(exit::REFUSED));
    }
    let result = runner.rollback().await;
    log(ctx, "schema.rollback", m, outcome(&result, None)).await;
    let report = match result {
        Ok(report) => report,
        Err(e) => return failed(e, &format!("roll back {m}")),
    };
    print_report(m, "rolled back", &report);
    let writing = tenants_where(ctx, m, |p| matches!(p, Phase::DualWrite | Phase::Shadow)).await?;
    if !writing.is_empty() {
        println!(
            "note: {} tenant(s) are still in dual_write or shadow; they use the old shape, the only one left. Roll them back to legacy before starting {m} again (`ferry rollout {m} --all --action rollback`)",
            writing.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The tenants of `m` whose phase passes `keep`, with their phases.
async fn tenants_where(
    ctx: &Context,
    m: &MigrationId,
    keep: impl Fn(Phase) -> bool,
) -> anyhow::Result<Vec<(TenantId, Phase)>> {
    Ok(super::all_tenant_records(ctx, m)
        .await?
        .into_iter()
        .filter(|r| keep(r.state.phase))
        .map(|r| (r.tenant, r.state.phase))
        .collect())
}

/// `acme (shadow), globex (legacy), … and N more`.
fn listed(tenants: &[(TenantId, Phase)], at_most: usize) -> String {
    let mut parts: Vec<String> = tenants
        .iter()
        .take(at_most)
        .map(|(t, p)| format!("{t} ({p})"))
        .collect();
    if tenants.len() > at_most {
        parts.push(format!("… and {} more", tenants.len() - at_most));
    }
    parts.join(", ")
}

/// A refusal on stderr: why, then the tenants (at most 20) with their phases.
fn refuse(why: &str, tenants: &[(TenantId, Phase)]) {
    eprintln!("error: refused: {why}");
    for (t, p) in tenants.iter().take(20) {
        eprintln!("  {t}: {p}");
    }
    if tenants.len() > 20 {
        eprintln!("  … and {} more", tenants.len() - 20);
    }
}

/// A failed action: a refusal is exit code 3 with its message, anything else an error.
fn failed(e: SchemaError, what: &str) -> anyhow::Result<ExitCode> {
    match e {
        SchemaError::Refused(message) => {
            eprintln!("error: {what}: refused: {message}");
            Ok(ExitCode::from(exit::REFUSED))
        }
        other => Err(schema_error(other)).context(what.to_owned()),
    }
}

fn print_report(m: &MigrationId, verb: &str, report: &Report) {
    if report.ran.is_empty() && report.skipped.is_empty() {
        println!("{m} was already {verb}: nothing to do");
        return;
    }
    println!(
        "{verb} {m}: {} step(s) run, {} already done by an earlier run, {} lock timeout(s) retried",
        report.ran.len(),
        report.skipped.len(),
        report.retries
    );
    for step in &report.skipped {
        println!("  done before: {step}");
    }
    for step in &report.ran {
        println!("  ran: {step}");
    }
}

/// The operator log's outcome of an action: `ok: …`, `refused: …` or `error: …`.
fn outcome(result: &Result<Report, SchemaError>, note: Option<&str>) -> String {
    let note = note.map(|n| format!("; {n}")).unwrap_or_default();
    match result {
        Ok(r) => format!(
            "ok: {} step(s) run, {} skipped, {} retries{note}",
            r.ran.len(),
            r.skipped.len(),
            r.retries
        ),
        Err(SchemaError::Refused(m)) => format!("refused: {m}{note}"),
        Err(e) => format!("error: {e}{note}"),
    }
}

/// Appends to the operator log, as every mutating operator call does (`ferry_api::ops`).
async fn log(ctx: &Context, operation: &str, m: &MigrationId, outcome: String) {
    let entry = NewOperation {
        actor: ctx.actor.clone(),
        operation: operation.to_owned(),
        target: m.to_string(),
        outcome,
    };
    if let Err(e) = ctx.store.record_operation(&entry).await {
        eprintln!("warning: could not append {operation} on {m} to the operator log: {e}");
    }
}
