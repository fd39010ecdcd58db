use std::process::ExitCode;

use anyhow::Context as _;
use ferry_api::{MigrationStatus, RouterView, Status};

use crate::args::StatusArgs;
use crate::context::Context;
use crate::output;

/// Builds the status every surface shows (terminal, `--json`, the API).
pub async fn build(
    ctx: &Context,
    only: Option<&ferry_domain::MigrationId>,
) -> anyhow::Result<Status> {
    Ok(ctx.ops.status(only).await?)
}

pub async fn status(ctx: &Context, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let status = build(ctx, args.migration.as_ref()).await?;
    if args.json {
        output::json(&status)?;
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn print_status(status: &Status) {
    println!("store {}  (change {})", status.store, status.change_version);
    if status.migrations.is_empty() {
        println!("\nno migrations yet; create one with `ferry migration create ID --kind KIND`");
    }
    for m in &status.migrations {
        println!();
        println!(
            "{} ({}): {} tenants, {} paused",
            m.migration,
            m.kind,
            output::count(m.tenants),
            m.paused
        );
        print_migration(m);
    }
    let live = status.routers.iter().filter(|r| r.live).count();
    println!();
    println!(
        "routers: {live} live of {} registered",
        status.routers.len()
    );
}

/// The per-phase table with a proportional bar, e.g. `shadow  120  ████`.
pub fn print_migration(m: &MigrationStatus) {
    let total = m.tenants.max(1);
    let rows: Vec<Vec<String>> = m
        .phases
        .iter()
        .map(|p| {
            let width = usize::try_from(p.tenants * 30 / total).unwrap_or(30);
            let bar = if p.tenants > 0 {
                "█".repeat(width.max(1))
            } else {
                String::new()
            };
            vec![
                p.phase.clone(),
                output::count(p.tenants),
                output::count(p.paused),
                output::count(p.rows),
                bar,
            ]
        })
        .collect();
    output::table(&["  phase", "tenants", "paused", "rows", ""], &indent(rows));
}

fn indent(mut rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    for row in &mut rows {
        row[0] = format!("  {}", row[0]);
    }
    rows
}

pub async fn routers(ctx: &Context, json: bool) -> anyhow::Result<ExitCode> {
    let routers = ctx
        .store
        .routers(ferry_store::DEFAULT_ROUTER_LEASE)
        .await
        .context("list routers")?;
    let views: Vec<RouterView> = routers.iter().map(RouterView::from).collect();
    if json {
        output::json(&views)?;
        return Ok(ExitCode::SUCCESS);
    }
    if views.is_empty() {
        println!(
            "no routers registered; applications register when they start ferry_router::Router"
        );
        return Ok(ExitCode::SUCCESS);
    }
    let version = ctx
        .store
        .change_version()
        .await
        .context("read change counter")?;
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                if r.live { "live" } else { "presumed dead" }.to_owned(),
                format!("{} of {version}", r.seen_version),
                r.heartbeat_at.format("%H:%M:%S").to_string(),
                r.description.clone(),
            ]
        })
        .collect();
    output::table(
        &["router", "state", "seen", "heartbeat", "description"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}
