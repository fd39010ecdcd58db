//! `ferry schema backfill`: each tenant's history given `up(old)` in the new columns,
//! `--parallel` tenants at a time, with a progress bar read from the control store (where the backfill
//! checkpoints) and a summary; once, or a pass every `--interval` with `--follow`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_domain::{MigrationId, Phase, TenantId};
use ferry_schema::MigrationState;
use ferry_schema::backfill::{Backfill, Outcome};
use ferry_store::{BackfillProgress, CopyDirection};

use super::{Change, schema_error};
use crate::context::Context;
use crate::{exit, output};

/// What one pass came to.
#[derive(Default)]
struct Pass {
    complete: u64,
    rows: u64,
    stopped: u64,
    skipped: u64,
    failed: u64,
}

pub(super) async fn run(
    ctx: &Context,
    change: &Change,
    named: Vec<TenantId>,
    follow: Option<Duration>,
    parallel: usize,
) -> anyhow::Result<ExitCode> {
    let m = &change.migration;
    let runner = change.runner().await?;
    let state = change.state().await?;
    if state != Some(MigrationState::Started) {
        eprintln!(
            "error: refused: {m} is {}: the backfill runs after `ferry schema start {m}` and before `complete`",
            super::state_name(state)
        );
        return Ok(ExitCode::from(exit::REFUSED));
    }
    let backfill = Backfill::new(
        change.pool.clone(),
        Arc::new(runner.resolved().clone()),
        ctx.store.clone(),
    );
    loop {
        let tenants = if named.is_empty() {
            super::super::all_tenants(ctx, m).await?
        } else {
            named.clone()
        };
        let pass = pass(ctx, &backfill, m, &tenants, !named.is_empty(), parallel).await?;
        println!(
            "backfill of {m}: {} tenant(s) complete ({} row(s) written now), {} stopped, {} failed, {} not in dual_write, shadow or target_primary",
            pass.complete,
            output::count(pass.rows),
            pass.stopped,
            pass.failed,
            pass.skipped
        );
        let Some(every) = follow else {
            anyhow::ensure!(
                pass.failed == 0,
                "the backfill of {} tenant(s) failed (see above); fix the cause and run it again: each tenant resumes from its checkpoint",
                pass.failed
            );
            return Ok(if pass.stopped > 0 {
                ExitCode::from(exit::REFUSED)
            } else {
                ExitCode::SUCCESS
            });
        };
        tokio::time::sleep(every).await;
    }
}

/// How one tenant's turn in a pass ended.
enum Turn {
    Complete(u64),
    Stopped(u64),
    Skipped,
    Failed,
}

/// One pass over the tenants, `parallel` at a time. A tenant that fails is reported and
/// counted; the others go on.
async fn pass(
    ctx: &Context,
    backfill: &Backfill,
    m: &MigrationId,
    tenants: &[TenantId],
    say_skipped: bool,
    parallel: usize,
) -> anyhow::Result<Pass> {
    use futures_util::StreamExt as _;
    let bars = indicatif::MultiProgress::new();
    let turns: Vec<anyhow::Result<Turn>> = futures_util::stream::iter(tenants)
        .map(|tenant| turn(ctx, backfill, m, tenant, say_skipped, &bars))
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut pass = Pass::default();
    for t in turns {
        match t? {
            Turn::Complete(rows) => {
                pass.complete += 1;
                pass.rows += rows;
            }
            Turn::Stopped(rows) => {
                pass.stopped += 1;
                pass.rows += rows;
            }
            Turn::Skipped => pass.skipped += 1,
            Turn::Failed => pass.failed += 1,
        }
    }
    Ok(pass)
}

/// One tenant's backfill in a pass, said as it ends.
async fn turn(
    ctx: &Context,
    backfill: &Backfill,
    m: &MigrationId,
    tenant: &TenantId,
    say_skipped: bool,
    bars: &indicatif::MultiProgress,
) -> anyhow::Result<Turn> {
    let record = ctx
        .store
        .tenant(m, tenant)
        .await
        .with_context(|| format!("read tenant {tenant}"))?;
    let direction = match record.state.phase {
        Phase::DualWrite | Phase::Shadow => CopyDirection::Forward,
        Phase::TargetPrimary => CopyDirection::Reverse,
        phase => {
            if say_skipped {
                println!("{tenant}: {phase}: nothing to backfill");
            }
            return Ok(Turn::Skipped);
        }
    };
    let before = progress(ctx, m, tenant, direction, record.copy_epoch).await?;
    if before.as_ref().is_some_and(|p| p.complete) {
        println!("{tenant}: backfill already complete");
        return Ok(Turn::Complete(0));
    }
    let outcome = with_bar(ctx, backfill, m, tenant, direction, record.copy_epoch, bars).await;
    Ok(match outcome {
        Ok(Outcome::Complete { rows }) => {
            println!(
                "{tenant}: {}",
                match direction {
                    CopyDirection::Forward =>
                        format!("backfill complete: {} row(s) written", output::count(rows)),
                    CopyDirection::Reverse =>
                        "reverse sync recorded (the triggers kept the old shape in step)".to_owned(),
                }
            );
            Turn::Complete(rows)
        }
        Ok(Outcome::Stopped { rows, why }) => {
            println!(
                "{tenant}: {why} by an operator after {} row(s); `ferry copy resume {m} --tenant {tenant}` lets it go on",
                output::count(rows)
            );
            Turn::Stopped(rows)
        }
        Ok(Outcome::NotNow { phase }) => {
            println!("{tenant}: now in {phase}; nothing to backfill");
            Turn::Skipped
        }
        Err(e) => {
            eprintln!("{tenant}: error: {:#}", schema_error(e));
            Turn::Failed
        }
    })
}

/// Runs one tenant's backfill, its bar following the checkpoints it records.
async fn with_bar(
    ctx: &Context,
    backfill: &Backfill,
    m: &MigrationId,
    tenant: &TenantId,
    direction: CopyDirection,
    epoch: i64,
    bars: &indicatif::MultiProgress,
) -> Result<Outcome, ferry_schema::SchemaError> {
    let bar = bars.add(output::progress(0, "backfill"));
    bar.set_message(format!("{tenant} backfill"));
    let watch = !bar.is_hidden();
    let work = backfill.run_tenant(tenant);
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            done = &mut work => break done,
            () = tokio::time::sleep(Duration::from_millis(250)), if watch => {
                if let Ok(Some(p)) = progress(ctx, m, tenant, direction, epoch).await {
                    bar.set_length(p.rows_total.max(p.rows_done));
                    bar.set_position(p.rows_done);
                }
            }
        }
    };
    bar.finish_and_clear();
    outcome
}

/// The tenant's backfill progress in this copy epoch, if it has any.
async fn progress(
    ctx: &Context,
    m: &MigrationId,
    tenant: &TenantId,
    direction: CopyDirection,
    epoch: i64,
) -> anyhow::Result<Option<BackfillProgress>> {
    Ok(ctx
        .store
        .progress(m, Some(tenant))
        .await
        .with_context(|| format!("read tenant {tenant}'s backfill progress"))?
        .into_iter()
        .find(|p| p.direction == direction && p.epoch == epoch))
}
