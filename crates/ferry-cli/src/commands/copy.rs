//! `ferry copy …` and `ferry verify`: running and steering the copier.

use std::process::ExitCode;

use anyhow::Context as _;
use ferry_api::ops::CopyChange;
use ferry_api::{CopyProgressView, VerifyView};
use ferry_copier::schedule::Schedule;
use ferry_copier::{Copier, Outcome};
use ferry_domain::{Phase, TenantId};
use ferry_engine::{EngineSettings, PhaseEngine};
use ferry_store::CopyDirection;

use crate::args::{CopyCmd, CopyScope, DataUrls, VerifyArgs};
use crate::context::Context;
use crate::{exit, output};

async fn open_copier(
    ctx: &Context,
    migration: &ferry_domain::MigrationId,
    urls: &DataUrls,
    create_target: bool,
) -> anyhow::Result<Copier> {
    let source = ferry_copier::connect(&urls.source_url, "connect to the source database")
        .await
        .context("open the source database")?;
    let target = match &urls.target_url {
        Some(url) => ferry_copier::connect(url, "connect to the target database")
            .await
            .context("open the target database")?,
        None => source.clone(),
    };
    let engine = PhaseEngine::new(ctx.store.clone(), EngineSettings::default());
    Copier::open(
        ctx.store.clone(),
        engine,
        migration,
        source,
        target,
        create_target,
    )
    .await
    .with_context(|| format!("plan the copy of {migration}"))
}

pub async fn run(ctx: &Context, cmd: CopyCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        CopyCmd::Run {
            migration,
            tenants,
            urls,
            create_target,
            lag_replica_urls,
            overwrite,
            parallel,
        } => {
            let mut replicas = Vec::new();
            for url in &lag_replica_urls {
                replicas.push(
                    ferry_copier::connect(url, "connect to a replica")
                        .await
                        .with_context(|| {
                            format!("open replica {}", ferry_store::redact_url(url))
                        })?,
                );
            }
            let copier = open_copier(ctx, &migration, &urls, create_target)
                .await?
                .overwrite(overwrite)
                .watch_replicas(replicas);
            let sized = sized_tenants(ctx, &migration, tenants).await?;
            let names: Vec<TenantId> = sized.iter().map(|(t, _)| t.clone()).collect();
            let code = copy_all(ctx, &copier, &migration, sized, parallel).await?;
            // Then the changes a side missed, so the buffer-drained guard can pass.
            super::move_buffer::after_copies(ctx, &migration, &urls, &names).await?;
            Ok(code)
        }
        CopyCmd::Status { migration, json } => status(ctx, &migration, json).await,
        CopyCmd::Pause(scope) => control(ctx, scope, CopyChange::Pause).await,
        CopyCmd::Resume(scope) => control(ctx, scope, CopyChange::Resume).await,
        CopyCmd::Cancel(scope) => control(ctx, scope, CopyChange::Cancel).await,
        CopyCmd::Throttle { scope, rows_per_s } => {
            control(ctx, scope, CopyChange::Throttle(rows_per_s)).await
        }
    }
}

/// Each tenant with its registered size, which orders the schedule: the pages of the whole
/// migration, or the named tenants one by one.
async fn sized_tenants(
    ctx: &Context,
    migration: &ferry_domain::MigrationId,
    tenants: Vec<TenantId>,
) -> anyhow::Result<Vec<(TenantId, u64)>> {
    if tenants.is_empty() {
        return Ok(super::all_tenant_records(ctx, migration)
            .await?
            .into_iter()
            .map(|t| (t.tenant, t.rows))
            .collect());
    }
    let mut sized = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let rows = ctx
            .store
            .tenant(migration, &tenant)
            .await
            .with_context(|| format!("read tenant {tenant}"))?
            .rows;
        sized.push((tenant, rows));
    }
    Ok(sized)
}

/// Works on the tenants in the schedule's order, `parallel` large ones at a time. After an
/// error no more are started, and the ones running reach a checkpoint before it is returned.
async fn copy_all(
    ctx: &Context,
    copier: &Copier,
    migration: &ferry_domain::MigrationId,
    sized: Vec<(TenantId, u64)>,
    parallel: usize,
) -> anyhow::Result<ExitCode> {
    let mut schedule = Schedule::new(sized, parallel, copier.small_tenant_rows());
    let bars = indicatif::MultiProgress::new();
    let mut running = futures_util::stream::FuturesUnordered::new();
    let (mut unfinished, mut failed) = (0, None);
    loop {
        // Concurrency follows the pace controller's rate (RFC 001, step 4).
        schedule.set_parallel(copier.concurrency(parallel));
        while failed.is_none() {
            let Some(tenant) = schedule.start_next() else {
                break;
            };
            let bars = &bars;
            running.push(async move {
                let done = work_on(ctx, copier, migration, &tenant, bars).await;
                (tenant, done)
            });
        }
        let Some((tenant, done)) = futures_util::StreamExt::next(&mut running).await else {
            break;
        };
        schedule.finished(&tenant);
        match done {
            Ok(true) => {}
            Ok(false) => unfinished += 1,
            // Let the copies already running reach a checkpoint, start no more.
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(if unfinished > 0 {
        ExitCode::from(exit::REFUSED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Does whatever the tenant's phase calls for; returns whether the tenant needs nothing more.
async fn work_on(
    ctx: &Context,
    copier: &Copier,
    migration: &ferry_domain::MigrationId,
    tenant: &TenantId,
    bars: &indicatif::MultiProgress,
) -> anyhow::Result<bool> {
    let record = ctx
        .store
        .tenant(migration, tenant)
        .await
        .context("read tenant")?;
    let facts = ctx
        .store
        .guard_facts(
            migration,
            std::slice::from_ref(&record),
            ferry_store::DEFAULT_ROUTER_LEASE,
        )
        .await
        .context("read guard facts")?;
    let direction = match record.state.phase {
        Phase::DualWrite | Phase::Shadow => CopyDirection::Forward,
        Phase::TargetPrimary if !facts[0].source_current => CopyDirection::Reverse,
        Phase::Complete => return retire(copier, tenant, bars).await,
        phase => {
            bars.suspend(|| println!("{tenant}: {phase}: nothing to copy"));
            return Ok(true);
        }
    };
    let bar = bars.add(output::progress(0, direction.as_str()));
    bar.set_message(format!("{tenant} {}", direction.as_str()));
    let outcome = copier
        .copy(tenant, direction, |p| {
            bar.set_length(p.rows_total);
            bar.set_position(p.rows_done);
        })
        .await
        .with_context(|| format!("{} copy of tenant {tenant}", direction.as_str()))?;
    bar.finish_and_clear();
    let (line, done) = describe(outcome, direction);
    bars.suspend(|| println!("{tenant}: {line}"));
    Ok(done)
}

/// In `complete`: deletes the tenant's rows from the source.
async fn retire(
    copier: &Copier,
    tenant: &TenantId,
    bars: &indicatif::MultiProgress,
) -> anyhow::Result<bool> {
    let bar = bars.add(output::progress(0, "retire"));
    let deleted = copier
        .retire_source(tenant, |n| bar.set_position(n))
        .await
        .with_context(|| format!("delete {tenant}'s rows from the source"))?;
    bar.finish_and_clear();
    bars.suspend(|| {
        println!(
            "{tenant}: complete; deleted {} row(s) from the source",
            output::count(deleted)
        )
    });
    Ok(true)
}

/// What a copy came to, as a line for the operator, and whether the tenant is done.
fn describe(outcome: Outcome, direction: CopyDirection) -> (String, bool) {
    match outcome {
        Outcome::Complete {
            rows,
            repaired,
            mismatches,
            resumed_at,
        } => (
            format!(
                "{} copy complete: {} rows{}, {repaired} repaired, {mismatches} mismatch(es){}",
                direction.as_str(),
                output::count(rows),
                // A resumed run counts what it copied itself; the checkpoint had the rest.
                if resumed_at > 0 {
                    format!(
                        " (resumed after {} checkpointed)",
                        output::count(resumed_at)
                    )
                } else {
                    String::new()
                },
                if mismatches > 0 {
                    " (see `ferry verify`)"
                } else {
                    ""
                }
            ),
            true,
        ),
        Outcome::AlreadyComplete => (
            format!("{} copy already complete", direction.as_str()),
            true,
        ),
        Outcome::Paused => ("paused by an operator; checkpoint kept".into(), false),
        Outcome::Cancelled => (
            "cancelled by an operator; checkpoint discarded".into(),
            false,
        ),
        Outcome::NotInPhase(p) => (format!("now in {p}; stopped"), false),
        Outcome::WaitingForRouters(r) => (
            format!(
                "waiting for routers {} to acknowledge the phase; run again",
                r.join(", ")
            ),
            false,
        ),
    }
}

async fn status(
    ctx: &Context,
    migration: &ferry_domain::MigrationId,
    json: bool,
) -> anyhow::Result<ExitCode> {
    ctx.store
        .migration(migration)
        .await
        .context("read migration")?;
    let progress = ctx
        .store
        .progress(migration, None)
        .await
        .context("read copy progress")?;
    // One view for both outputs, so the table and --json cannot disagree (on the ETA, say).
    let views: Vec<CopyProgressView> = progress.iter().map(CopyProgressView::from).collect();
    if json {
        output::json(&views)?;
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        println!("no copy has started for {migration}");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|p| {
            vec![
                p.tenant.clone(),
                p.direction.clone(),
                format!(
                    "{} / {}",
                    output::count(p.rows_done),
                    output::count(p.rows_total)
                ),
                if p.complete {
                    "complete".to_owned()
                } else {
                    format!("{:.0} rows/s", p.rows_per_s)
                },
                p.eta_s.map_or_else(String::new, |s| format!("{s:.0}s")),
                p.throttled.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(&["tenant", "copy", "rows", "rate", "eta", "held by"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn control(ctx: &Context, scope: CopyScope, change: CopyChange) -> anyhow::Result<ExitCode> {
    let view = ctx
        .ops
        .copy_control(&ctx.actor, &scope.migration, scope.tenant.as_ref(), change)
        .await
        .context("set copy controls")?;
    let what = match change {
        CopyChange::Pause => "paused".to_owned(),
        CopyChange::Resume => "resumed".to_owned(),
        CopyChange::Cancel => "cancelled".to_owned(),
        CopyChange::Throttle(_) => match view.rows_per_s {
            Some(r) => format!("throttled to {r} rows/s"),
            None => "unthrottled".to_owned(),
        },
    };
    match &scope.tenant {
        Some(t) => println!("copy of {t} in {}: {what}", scope.migration),
        None => println!("copy of every tenant in {}: {what}", scope.migration),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn verify(ctx: &Context, args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let copier = open_copier(ctx, &args.migration, &args.urls, false).await?;
    let record = ctx
        .store
        .tenant(&args.migration, &args.tenant)
        .await
        .context("read tenant")?;
    // Compare from the side that is authoritative now.
    let direction = match record.state.phase.authority() {
        ferry_domain::Side::Source => CopyDirection::Forward,
        ferry_domain::Side::Target => CopyDirection::Reverse,
    };
    let diff = copier
        .verify(&args.tenant, direction)
        .await
        .with_context(|| format!("verify tenant {}", args.tenant))?;
    if args.json {
        output::json(&VerifyView {
            tenant: args.tenant.to_string(),
            matches: diff.is_empty(),
            missing: diff.missing.clone(),
            differing: diff.differing.clone(),
            extra: diff.extra.iter().map(|(k, _)| k.clone()).collect(),
        })?;
    } else if diff.is_empty() {
        println!(
            "{}: source and target match; open mismatches resolved",
            args.tenant
        );
    } else {
        println!(
            "{}: {} missing, {} differing, {} extra (recorded as mismatches)",
            args.tenant,
            diff.missing.len(),
            diff.differing.len(),
            diff.extra.len()
        );
        for key in diff
            .missing
            .iter()
            .chain(&diff.differing)
            .chain(diff.extra.iter().map(|(k, _)| k))
            .take(20)
        {
            println!("  {key}");
        }
    }
    Ok(if diff.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::REFUSED)
    })
}
