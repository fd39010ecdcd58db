//! Phase changes from the CLI: one tenant, or a cohort.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use ferry_api::RolloutView;
use ferry_domain::{Action, Cohort, Percent};
use ferry_engine::{EngineError, Request, RolloutReport};

use crate::args::{ActionArg, ChangeArgs, ChangeFlags, RollbackArgs, RolloutArgs};
use crate::context::Context;
use crate::{exit, output};

fn request(ctx: &Context, flags: &ChangeFlags) -> Request {
    Request {
        actor: ctx.actor.clone(),
        reason: flags.reason.clone(),
        force: flags.force,
        dry_run: flags.dry_run,
        expect_phase: flags.from_phase,
    }
}

pub async fn one(ctx: &Context, args: ChangeArgs, action: Action) -> anyhow::Result<ExitCode> {
    let result = ctx
        .engine
        .change(
            &args.migration,
            &args.tenant,
            action,
            &request(ctx, &args.change),
        )
        .await;
    let report = match result {
        Ok(moved) => RolloutReport {
            moved: vec![moved],
            refused: vec![],
        },
        Err(e @ EngineError::Refused { .. }) => {
            eprintln!("error: {e}");
            if !args.change.force {
                eprintln!(
                    "hint: `ferry tenant show {} {}` shows what the guards are waiting for; --force --reason TEXT overrides them (audited)",
                    args.migration, args.tenant
                );
            }
            return Ok(ExitCode::from(exit::REFUSED));
        }
        Err(e) => return Err(e).with_context(|| format!("{action} tenant {}", args.tenant)),
    };
    finish(ctx, action, &args.change, report).await
}

/// Walks a tenant back towards legacy, one guarded step at a time, waiting for every live
/// router between steps.
pub async fn rollback(ctx: &Context, args: RollbackArgs) -> anyhow::Result<ExitCode> {
    if args.one_step || args.base.change.dry_run {
        return one(ctx, args.base, Action::Rollback).await;
    }
    let ChangeArgs {
        migration,
        tenant,
        change,
    } = &args.base;
    let mut steps = 0;
    loop {
        let moved = match ctx
            .engine
            .change(migration, tenant, Action::Rollback, &request(ctx, change))
            .await
        {
            Ok(moved) => moved,
            Err(e @ EngineError::Refused { .. }) if steps > 0 => {
                println!("stopped after {steps} step(s): {e}");
                return Ok(ExitCode::from(exit::REFUSED));
            }
            Err(e @ EngineError::Refused { .. }) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(exit::REFUSED));
            }
            Err(e) => return Err(e).with_context(|| format!("roll back tenant {tenant}")),
        };
        steps += 1;
        println!(
            "rolled back {tenant}: {} -> {}",
            moved.from.phase, moved.to_phase
        );
        let ack = ctx
            .engine
            .wait_acknowledged(moved.change_version, Duration::from_secs(change.wait))
            .await
            .context("wait for routers to acknowledge")?;
        if !ack.effective() {
            println!(
                "NOT YET EFFECTIVE: waiting for {} to acknowledge change {}; not taking the next step",
                ack.lagging.join(", "),
                moved.change_version
            );
            return Ok(ExitCode::from(exit::NOT_EFFECTIVE));
        }
        if moved.to_phase == ferry_domain::Phase::Legacy {
            println!("effective: {tenant} is back on the source (legacy)");
            return Ok(ExitCode::SUCCESS);
        }
    }
}

pub async fn rollout(ctx: &Context, args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let cohort = if !args.cohort.tenants.is_empty() {
        Cohort::Explicit(args.cohort.tenants.clone())
    } else if let Some(p) = &args.cohort.percent {
        Cohort::Percent(Percent::parse(p).context("read --percent")?)
    } else if let Some(n) = args.cohort.smallest {
        Cohort::SmallestFirst(n)
    } else {
        Cohort::All
    };
    let action = match args.action {
        ActionArg::Advance => Action::Advance,
        ActionArg::Rollback => Action::Rollback,
        ActionArg::Pause => Action::Pause,
        ActionArg::Resume => Action::Resume,
    };
    let bar = output::progress(0, action.as_str());
    let report = ctx
        .engine
        .rollout(
            &args.migration,
            &cohort,
            action,
            &request(ctx, &args.change),
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )
        .await
        .with_context(|| format!("roll out {action} on {}", args.migration))?;
    bar.finish_and_clear();
    finish(ctx, action, &args.change, report).await
}

/// Prints what happened, waits for routers, and picks the exit code.
async fn finish(
    ctx: &Context,
    action: Action,
    flags: &ChangeFlags,
    report: RolloutReport,
) -> anyhow::Result<ExitCode> {
    let version = report.change_version();
    let pending = if version > 0 && !flags.dry_run {
        ctx.engine
            .wait_acknowledged(version, Duration::from_secs(flags.wait))
            .await
            .context("wait for routers to acknowledge")?
            .lagging
    } else {
        vec![]
    };
    let view = RolloutView::build(action, flags.dry_run, &report, pending.clone());
    if flags.json {
        output::json(&view)?;
    } else {
        print_report(&view, &report);
    }
    Ok(if !report.refused.is_empty() {
        ExitCode::from(exit::REFUSED)
    } else if !pending.is_empty() {
        ExitCode::from(exit::NOT_EFFECTIVE)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(view: &RolloutView, report: &RolloutReport) {
    let verb = if view.dry_run { "would move" } else { "moved" };
    let mut transitions: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for m in &view.moved {
        *transitions
            .entry((m.from.clone(), m.to.clone()))
            .or_default() += 1;
    }
    if view.moved.len() == 1 {
        let m = &view.moved[0];
        println!(
            "{verb} {}: {} -> {}{}",
            m.tenant,
            m.from,
            m.to,
            if m.paused { " (paused)" } else { "" }
        );
    } else {
        println!("{verb} {} tenant(s)", view.moved.len());
        for ((from, to), n) in &transitions {
            println!("  {from} -> {to}: {n}");
        }
    }
    let forced: usize = view.moved.iter().filter(|m| !m.forced.is_empty()).count();
    if forced > 0 {
        println!("FORCED past failed guards for {forced} tenant(s); recorded in the audit log");
    }
    if !report.refused.is_empty() {
        println!("refused {} tenant(s):", report.refused.len());
        for (reason, n) in report.refusal_summary() {
            println!("  {n} × {reason}");
        }
        for r in report.refused.iter().take(10) {
            println!("    {}: {}", r.tenant, r.reason);
        }
        if report.refused.len() > 10 {
            println!(
                "    … and {} more (--json lists all)",
                report.refused.len() - 10
            );
        }
    }
    if view.dry_run {
        println!("dry run: nothing was changed");
    } else if view.change_version > 0 {
        if view.pending_acknowledgement.is_empty() {
            println!(
                "effective: every live router has acknowledged change {}",
                view.change_version
            );
        } else {
            println!(
                "NOT YET EFFECTIVE: waiting for {} to acknowledge change {} (see `ferry routers`)",
                view.pending_acknowledgement.join(", "),
                view.change_version
            );
        }
    }
}
