//! The operator commands, one module per noun.

mod change;
mod copy;
mod migration;
mod move_buffer;
mod schema;
mod serve;
mod status;
mod tenant;
mod tier;

use std::process::ExitCode;

use crate::args::Command;
use crate::context::Context;

/// Prints the full status, as `ferry status` does; shared with the demo.
pub async fn status_report(ctx: &Context) -> anyhow::Result<()> {
    status::print_status(&status::build(ctx, None).await?);
    Ok(())
}

/// Every tenant of a migration, by keyset pages.
pub(crate) async fn all_tenants(
    ctx: &Context,
    migration: &ferry_domain::MigrationId,
) -> anyhow::Result<Vec<ferry_domain::TenantId>> {
    Ok(all_tenant_records(ctx, migration)
        .await?
        .into_iter()
        .map(|t| t.tenant)
        .collect())
}

/// Every tenant record of a migration (phase, rows, …), by keyset pages.
pub(crate) async fn all_tenant_records(
    ctx: &Context,
    migration: &ferry_domain::MigrationId,
) -> anyhow::Result<Vec<ferry_store::TenantRecord>> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = ctx
            .store
            .tenants(
                migration,
                &ferry_store::TenantQuery {
                    after: after.clone(),
                    limit: Some(10_000),
                    ..ferry_store::TenantQuery::default()
                },
            )
            .await
            .map_err(anyhow::Error::from)?;
        let Some(last) = page.last() else { break };
        after = Some(last.tenant.clone());
        out.extend(page);
    }
    Ok(out)
}

pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Migration(cmd) => migration::run(ctx, cmd).await,
        Command::Tenant(cmd) => tenant::run(ctx, cmd).await,
        Command::Rollout(args) => change::rollout(ctx, args).await,
        Command::Status(args) => status::status(ctx, args).await,
        Command::Routers(args) => status::routers(ctx, args.json).await,
        Command::Copy(cmd) => copy::run(ctx, cmd).await,
        Command::Verify(args) => copy::verify(ctx, args).await,
        Command::Tier(cmd) => tier::run(ctx, cmd).await,
        Command::Buffer(cmd) => tier::buffer(ctx, cmd).await,
        Command::Schema(cmd) => schema::run(ctx, cmd).await,
        Command::Serve(args) => serve::serve(ctx, args).await,
        Command::Token(cmd) => serve::token(ctx, cmd).await,
        Command::Demo(_) | Command::Bench(_) | Command::Check(_) => {
            unreachable!("demo and bench open their own stores and are dispatched in main")
        }
    }
}
