//! `ferry tenant …`: registering tenants, listing and showing them, and their history; the
//! phase changes themselves go through `change.rs`, which `ferry rollout` shares.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use ferry_domain::{Action, MigrationId, TenantId};
use ferry_store::{TenantQuery, TenantSize};

use crate::args::TenantCmd;
use crate::context::Context;
use crate::output;

pub async fn run(ctx: &Context, cmd: TenantCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantCmd::Add {
            migration,
            tenants,
            from_file,
        } => add(ctx, &migration, &tenants, from_file.as_deref()).await?,
        TenantCmd::List {
            migration,
            phase,
            paused,
            after,
            limit,
            json,
        } => {
            let query = TenantQuery {
                phase,
                paused: paused.then_some(true),
                after,
                limit: Some(limit),
            };
            list(ctx, &migration, &query, limit, json).await?
        }
        TenantCmd::Show {
            migration,
            tenant,
            json,
        } => show(ctx, &migration, &tenant, json).await?,
        TenantCmd::Advance(args) => return super::change::one(ctx, args, Action::Advance).await,
        TenantCmd::Rollback(args) => return super::change::rollback(ctx, args).await,
        TenantCmd::Pause(args) => return super::change::one(ctx, args, Action::Pause).await,
        TenantCmd::Resume(args) => return super::change::one(ctx, args, Action::Resume).await,
        TenantCmd::History {
            migration,
            tenant,
            json,
        } => history(ctx, &migration, &tenant, json).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry tenant add`: tenants from the arguments, then from the file, registered at once.
async fn add(
    ctx: &Context,
    migration: &MigrationId,
    tenants: &[String],
    from_file: Option<&Path>,
) -> anyhow::Result<()> {
    let mut sizes = Vec::new();
    for (i, arg) in tenants.iter().enumerate() {
        sizes.push(
            parse_tenant(arg, '=')
                .with_context(|| format!("read tenant argument {} ({arg:?})", i + 1))?,
        );
    }
    if let Some(path) = from_file {
        sizes.extend(read_tenant_file(path)?);
    }
    anyhow::ensure!(
        !sizes.is_empty(),
        "no tenants given; pass TENANT[=ROWS] arguments or --from-file"
    );
    let added = ctx
        .store
        .register_tenants(migration, &sizes)
        .await
        .context("register tenants")?;
    println!(
        "registered {} tenant(s) in {migration}: {added} new, {} updated",
        sizes.len(),
        sizes.len() as u64 - added
    );
    Ok(())
}

/// `TENANT[,ROWS]` lines of a file, or of standard input for `-`; `#` starts a comment.
fn read_tenant_file(path: &Path) -> anyhow::Result<Vec<TenantSize>> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("read tenants from standard input")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?
    };
    let mut sizes = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        sizes.push(
            parse_tenant(line, ',').with_context(|| format!("{}:{}", path.display(), n + 1))?,
        );
    }
    Ok(sizes)
}

async fn list(
    ctx: &Context,
    migration: &MigrationId,
    query: &TenantQuery,
    limit: u64,
    json: bool,
) -> anyhow::Result<()> {
    let tenants = ctx
        .ops
        .tenants(migration, query)
        .await
        .context("list tenants")?;
    if json {
        output::json(&tenants)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|t| {
            vec![
                t.tenant.clone(),
                t.phase.clone(),
                if t.paused { "paused" } else { "" }.to_owned(),
                output::count(t.rows),
                t.updated_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            ]
        })
        .collect();
    output::table(&["tenant", "phase", "", "rows", "updated"], &rows);
    if let Some(last) = tenants.last().filter(|_| tenants.len() as u64 == limit) {
        println!("… more: --after {}", last.tenant);
    }
    Ok(())
}

async fn show(
    ctx: &Context,
    migration: &MigrationId,
    tenant: &TenantId,
    json: bool,
) -> anyhow::Result<()> {
    let detail = ctx.ops.tenant(migration, tenant).await?;
    if json {
        output::json(&detail)?;
        return Ok(());
    }
    let t = &detail.tenant;
    println!("tenant        {} (migration {migration})", t.tenant);
    println!(
        "phase         {}{}",
        t.phase,
        if t.paused { " (paused)" } else { "" }
    );
    println!("version       {}", t.version);
    println!("rows          {}", output::count(t.rows));
    println!(
        "backfill      {} of ~{} rows{}",
        output::count(detail.backfill_rows_done),
        output::count(detail.backfill_rows_total),
        if detail.backfill_complete {
            ", complete"
        } else {
            ""
        }
    );
    println!("mismatches    {} unresolved", detail.unresolved_mismatches);
    println!("buffer        {} pending", detail.buffer_depth);
    if !detail.lagging_routers.is_empty() {
        println!("lagging       {}", detail.lagging_routers.join(", "));
    }
    println!("next advance  {}", detail.next_advance);
    Ok(())
}

async fn history(
    ctx: &Context,
    migration: &MigrationId,
    tenant: &TenantId,
    json: bool,
) -> anyhow::Result<()> {
    let history = ctx
        .ops
        .history(migration, tenant)
        .await
        .context("read tenant history")?;
    if json {
        output::json(&history)?;
        return Ok(());
    }
    if history.is_empty() {
        println!("{tenant} has not changed phase since it was registered (legacy)");
        return Ok(());
    }
    let paused = |p: bool| if p { " (paused)" } else { "" };
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|e| {
            vec![
                e.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                e.action.clone(),
                format!(
                    "{}{} -> {}{}",
                    e.from_phase,
                    paused(e.from_paused),
                    e.to_phase,
                    paused(e.to_paused)
                ),
                e.actor.clone(),
                if e.forced_guards.is_empty() {
                    String::new()
                } else {
                    format!("FORCED {}", e.forced_guards.join(","))
                },
                e.reason.clone(),
            ]
        })
        .collect();
    output::table(
        &["at (UTC)", "action", "change", "actor", "", "reason"],
        &rows,
    );
    Ok(())
}

/// `TENANT` or `TENANT<sep>ROWS`.
fn parse_tenant(s: &str, sep: char) -> anyhow::Result<TenantSize> {
    let (id, rows) = match s.split_once(sep) {
        Some((id, rows)) => {
            let rows = rows
                .trim()
                .parse::<u64>()
                .with_context(|| format!("row count {:?} is not a whole number", rows.trim()))?;
            (id.trim(), rows)
        }
        None => (s.trim(), 0),
    };
    Ok(TenantSize {
        tenant: TenantId::new(id)?,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_tenant;

    #[test]
    fn tenant_arguments_parse() {
        let t = parse_tenant("acme=120", '=').unwrap();
        assert_eq!((t.tenant.as_str(), t.rows), ("acme", 120));
        let t = parse_tenant(" globex , 7 ", ',').unwrap();
        assert_eq!((t.tenant.as_str(), t.rows), ("globex", 7));
        assert_eq!(parse_tenant("solo", '=').unwrap().rows, 0);
        let err = parse_tenant("acme=lots", '=').unwrap_err();
        assert_eq!(err.to_string(), "row count \"lots\" is not a whole number");
        assert!(parse_tenant("a/b=1", '=').is_err());
    }
}
