//! The operator commands, one module per noun.

mod change;
mod copy;
mod migration;
mod status;
mod tenant;

use std::process::ExitCode;

use crate::args::Command;
use crate::context::Context;

/// Prints the full status, as `ferry status` does; shared with the demo.
pub async fn status_report(ctx: &Context) -> anyhow::Result<()> {
    status::print_status(&status::build(ctx, None).await?);
    Ok(())
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
        Command::Demo(_) | Command::Bench(_) => {
            unreachable!("demo and bench open their own stores and are dispatched in main")
        }
    }
}
