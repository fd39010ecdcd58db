//! Phase changes from the CLI: one tenant, or a cohort. The work is `ferry_api::ops`; this
//! module picks the output and the exit code.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use ferry_api::ops::ChangeOptions;
use ferry_api::{OpsError, RolloutView};
use ferry_domain::{Action, Cohort, Percent, Phase};

use crate::args::{ActionArg, ChangeArgs, ChangeFlags, RollbackArgs, RolloutArgs};
use crate::context::Context;
use crate::{exit, output};

fn options(flags: &ChangeFlags) -> ChangeOptions {
    ChangeOptions {
        reason: flags.reason.clone(),
        force: flags.force,
        dry_run: flags.dry_run,
        from_phase: flags.from_phase,
        wait: Duration::from_secs(flags.wait),
    }
}

pub async fn one(ctx: &Context, args: ChangeArgs, action: Action) -> anyhow::Result<ExitCode> {
    let result = ctx
        .ops
        .change(
            &ctx.actor,
            &args.migration,
            &args.tenant,
            action,
            &options(&args.change),
        )
        .await;
    let view = match result {
        Ok(view) => view,
        Err(e @ OpsError::Refused(_)) if args.change.json => {
            output::json_error(e.code(), &e.to_string());
            return Ok(ExitCode::from(exit::REFUSED));
        }
        Err(e @ OpsError::Refused(_)) => {
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
    finish(&args.change, &view)
}

/// Walks a tenant back towards legacy, one guarded step at a time, waiting for every live
/// router between steps. With `--json`, one object at the end: every step taken, how the walk
/// ended, and the refusal that stopped it if one did.
pub async fn rollback(ctx: &Context, args: RollbackArgs) -> anyhow::Result<ExitCode> {
    if args.one_step || args.base.change.dry_run {
        return one(ctx, args.base, Action::Rollback).await;
    }
    let json = args.base.change.json;
    let mut walk = RollbackWalk::default();
    let code = walk_back(ctx, &args, &mut walk).await;
    if json {
        let (code, error) = match &code {
            Ok(code) => (*code, walk.refusal.take()),
            Err(e) => (
                ExitCode::FAILURE,
                Some((output::error_code(e), format!("{e:#}"))),
            ),
        };
        output::json(&serde_json::json!({
            "steps": walk.steps,
            "result": walk.result,
            "error": error.map(|(code, message)| serde_json::json!({"code": code, "message": message})),
        }))?;
        return Ok(code);
    }
    if let Some((_, message)) = &walk.refusal {
        if walk.steps.is_empty() {
            eprintln!("error: {message}");
        } else {
            println!("stopped after {} step(s): {message}", walk.steps.len());
        }
    }
    code
}

/// What a rollback walk did, for its report.
#[derive(Default)]
struct RollbackWalk {
    steps: Vec<RolloutView>,
    /// `effective` (back on legacy), `not_effective` (a step waits for routers), `refused`.
    result: &'static str,
    refusal: Option<(&'static str, String)>,
}

async fn walk_back(
    ctx: &Context,
    args: &RollbackArgs,
    walk: &mut RollbackWalk,
) -> anyhow::Result<ExitCode> {
    let ChangeArgs {
        migration,
        tenant,
        change,
    } = &args.base;
    let quiet = change.json;
    loop {
        let view = match ctx
            .ops
            .change(
                &ctx.actor,
                migration,
                tenant,
                Action::Rollback,
                &options(change),
            )
            .await
        {
            Ok(view) => view,
            Err(e @ OpsError::Refused(_)) => {
                walk.result = "refused";
                walk.refusal = Some((e.code(), e.to_string()));
                return Ok(ExitCode::from(exit::REFUSED));
            }
            Err(e) => return Err(e).with_context(|| format!("roll back tenant {tenant}")),
        };
        let Some(moved) = view.moved.first().cloned() else {
            anyhow::bail!("roll back tenant {tenant}: the engine reported no change");
        };
        let pending = view.pending_acknowledgement.clone();
        let change_version = view.change_version;
        walk.steps.push(view);
        if !quiet {
            println!("rolled back {tenant}: {} -> {}", moved.from, moved.to);
        }
        if !pending.is_empty() {
            walk.result = "not_effective";
            if !quiet {
                println!(
                    "NOT YET EFFECTIVE: waiting for {} to acknowledge change {change_version}; not taking the next step",
                    pending.join(", "),
                );
            }
            return Ok(ExitCode::from(exit::NOT_EFFECTIVE));
        }
        if moved.to == Phase::Legacy.as_str() {
            walk.result = "effective";
            if !quiet {
                println!("effective: {tenant} is back on the source (legacy)");
            }
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
    let view = ctx
        .ops
        .rollout(
            &ctx.actor,
            &args.migration,
            &cohort,
            action,
            &options(&args.change),
            |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )
        .await
        .with_context(|| format!("roll out {action} on {}", args.migration))?;
    bar.finish_and_clear();
    finish(&args.change, &view)
}

/// Prints what happened and picks the exit code.
fn finish(flags: &ChangeFlags, view: &RolloutView) -> anyhow::Result<ExitCode> {
    if flags.json {
        output::json(view)?;
    } else {
        print_report(view);
    }
    Ok(if !view.refused.is_empty() {
        ExitCode::from(exit::REFUSED)
    } else if !view.pending_acknowledgement.is_empty() {
        ExitCode::from(exit::NOT_EFFECTIVE)
    } else {
        ExitCode::SUCCESS
    })
}

pub(super) fn print_report(view: &RolloutView) {
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
    if !view.refused.is_empty() {
        println!("refused {} tenant(s):", view.refused.len());
        for tally in &view.refusal_summary {
            println!("  {} × {}", tally.tenants, tally.reason);
        }
        for r in view.refused.iter().take(10) {
            println!("    {}: {}", r.tenant, r.reason);
        }
        if view.refused.len() > 10 {
            println!(
                "    … and {} more (--json lists all)",
                view.refused.len() - 10
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
