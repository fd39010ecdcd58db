//! `ferry migration …`: creating, listing, showing and verifying migrations.

use std::process::ExitCode;

use anyhow::Context as _;
use ferry_api::MigrationView;
use ferry_domain::MigrationId;
use ferry_store::{MigrationKind, NewMigration};

use crate::args::{KindArg, MigrationCmd};
use crate::context::Context;
use crate::output;

pub async fn run(ctx: &Context, cmd: MigrationCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        MigrationCmd::Create {
            id,
            kind,
            description,
            config,
        } => create(ctx, id, kind, description, &config).await?,
        MigrationCmd::List(flag) => list(ctx, flag.json).await?,
        MigrationCmd::Show { id, json } => show(ctx, &id, json).await?,
        MigrationCmd::Verify { id } => verify(ctx, &id).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn create(
    ctx: &Context,
    id: MigrationId,
    kind: KindArg,
    description: String,
    config: &str,
) -> anyhow::Result<()> {
    let config = read_config(config)?;
    check_config(kind, &config)?;
    let created = ctx
        .store
        .create_migration(&NewMigration {
            id,
            kind: kind_of(kind),
            description,
            config,
            created_by: ctx.actor.clone(),
        })
        .await
        .context("create migration")?;
    println!(
        "created migration {} ({}); register tenants with `ferry tenant add {} TENANT[=ROWS]...`",
        created.id,
        created.kind.as_str(),
        created.id
    );
    Ok(())
}

async fn list(ctx: &Context, json: bool) -> anyhow::Result<()> {
    let migrations = ctx.store.migrations().await.context("list migrations")?;
    if json {
        let views: Vec<MigrationView> = migrations.iter().map(MigrationView::from).collect();
        output::json(&views)?;
    } else if migrations.is_empty() {
        println!("no migrations yet; create one with `ferry migration create ID --kind KIND`");
    } else {
        let rows: Vec<Vec<String>> = migrations
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.kind.as_str().to_owned(),
                    m.created_at.format("%Y-%m-%d %H:%M").to_string(),
                    m.created_by.clone(),
                    m.description.clone(),
                ]
            })
            .collect();
        output::table(
            &["migration", "kind", "created", "by", "description"],
            &rows,
        );
    }
    Ok(())
}

async fn show(ctx: &Context, id: &MigrationId, json: bool) -> anyhow::Result<()> {
    let detail = ctx.ops.migration(id).await?;
    if json {
        output::json(&detail)?;
        return Ok(());
    }
    let m = &detail.migration;
    println!("migration   {}", m.id);
    println!("kind        {}", m.kind);
    println!("description {}", m.description);
    println!(
        "created     {} by {}",
        m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        m.created_by
    );
    println!("config      {}", m.config);
    println!();
    crate::commands::status::print_migration(&detail.status);
    Ok(())
}

/// Replays the audit log; an inconsistency is an error (exit 1) after the first 20 are shown.
async fn verify(ctx: &Context, id: &MigrationId) -> anyhow::Result<()> {
    let v = ferry_engine::verify_audit(ctx.store.as_ref(), id)
        .await
        .context("verify the audit log")?;
    println!(
        "{id}: {} audit entries replayed for {} tenants ({} forced)",
        output::count(v.entries),
        output::count(v.tenants),
        v.forced
    );
    for p in v.problems.iter().take(20) {
        println!("  inconsistent: {p}");
    }
    anyhow::ensure!(
        v.consistent(),
        "the audit log does not explain {} tenant phase(s)",
        v.problems.len()
    );
    println!("consistent: every phase is explained by the audit log");
    Ok(())
}

fn kind_of(kind: KindArg) -> MigrationKind {
    match kind {
        KindArg::Tiering => MigrationKind::Tiering,
        KindArg::SchemaChange => MigrationKind::SchemaChange,
        KindArg::TenantMove => MigrationKind::TenantMove,
        KindArg::Import => MigrationKind::Import,
    }
}

/// `--config` is inline JSON or `@FILE`; it must be a JSON object.
/// Checks a config against its kind's plan, so a mistake is refused here, naming the field,
/// rather than found when a worker opens the migration. An empty config is accepted: the
/// migration then only tracks phases until a worker is given a plan.
fn check_config(kind: KindArg, config: &serde_json::Value) -> anyhow::Result<()> {
    let empty = config.as_object().is_some_and(|o| o.is_empty());
    match kind {
        _ if empty => {}
        KindArg::TenantMove => {
            ferry_copier::TenantMoveConfig::from_json(config).context("check --config")?;
        }
        KindArg::Tiering => {
            ferry_tier::TieringConfig::from_json(config).context("check --config")?;
        }
        KindArg::SchemaChange => {
            // Every problem, each naming `operations[i].field`; no database needed (`ferry
            // schema validate` checks the plan against the catalogue too).
            ferry_schema::Plan::from_json(config)
                .map_err(super::schema::PlanErrors)
                .context("check --config")?;
        }
        KindArg::Import => {}
    }
    if empty && !matches!(kind, KindArg::Import) {
        eprintln!(
            "note: no --config: the migration tracks phases only; the copier, the archiver and `ferry schema` need a plan (see docs/tenant-move.md, docs/tiering.md, docs/schema-changes.md)"
        );
    }
    Ok(())
}

fn read_config(arg: &str) -> anyhow::Result<serde_json::Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("read --config file {path}"))?
        }
        None => arg.to_owned(),
    };
    let value: serde_json::Value = serde_json::from_str(&text).context("parse --config as JSON")?;
    anyhow::ensure!(
        value.is_object(),
        "--config must be a JSON object, like {{\"table\": \"orders\"}}"
    );
    Ok(value)
}
