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
    let Some(every) = args.watch else {
        let status = build(ctx, args.migration.as_ref()).await?;
        if args.json {
            output::json(&status)?;
        } else {
            print!("{}", render_status(&status));
        }
        return Ok(ExitCode::SUCCESS);
    };
    let every = std::time::Duration::from_secs(every.max(1));
    loop {
        let status = build(ctx, args.migration.as_ref()).await?;
        if args.json {
            // One object per line, so scripts can follow it.
            println!("{}", serde_json::to_string(&status)?);
        } else {
            // Clear the screen and home the cursor, then draw the whole page in one write.
            print!(
                "\x1b[2J\x1b[H{}\nrefreshing every {}s; Ctrl-C to stop\n",
                render_status(&status),
                every.as_secs()
            );
        }
        use std::io::Write as _;
        std::io::stdout().flush().context("write the status")?;
        tokio::time::sleep(every).await;
    }
}

pub fn print_status(status: &Status) {
    print!("{}", render_status(status));
}

/// The whole terminal status page.
pub fn render_status(status: &Status) -> String {
    let mut out = format!(
        "store {}  (change {})\n",
        status.store, status.change_version
    );
    if status.migrations.is_empty() {
        out.push_str(
            "\nno migrations yet; create one with `ferry migration create ID --kind KIND`\n",
        );
    }
    for m in &status.migrations {
        out.push('\n');
        out.push_str(&format!(
            "{} ({}): {} tenants, {} paused\n",
            m.migration,
            m.kind,
            output::count(m.tenants),
            m.paused
        ));
        out.push_str(&render_migration(m));
        out.push_str(&render_health(m));
    }
    let live = status.routers.iter().filter(|r| r.live).count();
    out.push_str(&format!(
        "\nrouters: {live} live of {} registered\n",
        status.routers.len()
    ));
    out
}

/// Buffer, mismatches, routing and copies of one migration, with a bar per running copy.
fn render_health(m: &MigrationStatus) -> String {
    let mut out = String::new();
    let b = &m.buffer;
    let oldest = b.oldest_pending_at.map_or_else(
        || "none pending".to_owned(),
        |at| {
            let age = (chrono::Utc::now() - at).num_seconds().max(0);
            format!("oldest pending {age}s")
        },
    );
    out.push_str(&format!(
        "  buffer      {} pending, {} dead, {} retrying ({} failed attempts), {oldest}\n",
        output::count(b.pending),
        output::count(b.dead),
        output::count(b.retrying),
        output::count(b.attempts),
    ));
    out.push_str(&format!(
        "  mismatches  {} open of {}\n",
        output::count(m.mismatches.open),
        output::count(m.mismatches.total)
    ));
    let routed = m.routed;
    if routed > 0 {
        let paths: Vec<String> = m
            .routed_by_path()
            .iter()
            .map(|(p, n)| format!("{p} {}", output::count(*n)))
            .collect();
        out.push_str(&format!(
            "  routed      {} operations: {}; {} fallbacks\n",
            output::count(routed),
            paths.join(", "),
            output::count(m.fallbacks)
        ));
    }
    let c = &m.copies;
    if c.running + c.complete > 0 {
        out.push_str(&format!(
            "  copies      {} running, {} complete, {} of ~{} rows, {} rows/s\n",
            c.running,
            c.complete,
            output::count(c.rows_done),
            output::count(c.rows_total),
            output::count(c.rows_per_s.round() as u64)
        ));
        for t in &c.throttled {
            out.push_str(&format!(
                "  throttled   {} copies by {}\n",
                t.tenants, t.cause
            ));
        }
        for p in &c.active {
            out.push_str(&format!("    {}\n", progress_line(p)));
        }
    }
    out
}

/// `acme  forward  [#######.............]  35%  35,000/100,000  2,000 rows/s  eta 33s`.
fn progress_line(p: &ferry_api::CopyProgressView) -> String {
    const WIDTH: u64 = 20;
    let total = p.rows_total.max(p.rows_done).max(1);
    let filled = (p.rows_done * WIDTH / total).min(WIDTH);
    let bar: String = (0..WIDTH)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    let mut line = format!(
        "{:<16} {:<8} [{bar}] {:>3}%  {}/{}  {} rows/s",
        p.tenant,
        p.direction,
        p.rows_done * 100 / total,
        output::count(p.rows_done),
        output::count(p.rows_total),
        output::count(p.rows_per_s.round() as u64)
    );
    if let Some(eta) = p.eta_s {
        line.push_str(&format!("  eta {}s", eta.round() as u64));
    }
    if let Some(why) = &p.throttled {
        line.push_str(&format!("  ({why})"));
    }
    line
}

/// The per-phase table with a proportional bar, e.g. `shadow  120  ████`.
pub fn print_migration(m: &MigrationStatus) {
    print!("{}", render_migration(m));
}

fn render_migration(m: &MigrationStatus) -> String {
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
    output::render_table(&["  phase", "tenants", "paused", "rows", ""], &indent(rows))
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
