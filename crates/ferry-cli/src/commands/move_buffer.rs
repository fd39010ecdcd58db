//! `ferry buffer apply`: a tenant move's update buffer applied, once or following; and the
//! pass `ferry copy run` makes after its copies.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use ferry_domain::{MigrationId, TenantId};
use ferry_move::{BufferPass, MoveBuffer};
use serde::Serialize;

use crate::args::DataUrls;
use crate::context::Context;
use crate::{exit, output};

pub struct Options {
    pub follow: bool,
    pub interval: Duration,
    pub json: bool,
}

/// One pass's totals over the tenants, and the tenants left with work.
#[derive(Serialize, Default)]
struct PassReport {
    applied: u64,
    failed: u64,
    unreachable: u64,
    tenants_waiting: Vec<TenantWaiting>,
}

#[derive(Serialize)]
struct TenantWaiting {
    tenant: String,
    failed: u64,
    unreachable: u64,
    last_error: Option<String>,
}

async fn open(
    ctx: &Context,
    migration: &MigrationId,
    urls: &DataUrls,
) -> anyhow::Result<MoveBuffer> {
    let source = ferry_copier::connect(&urls.source_url, "connect to the source database")
        .await
        .context("open the source database")?;
    let target = match &urls.target_url {
        Some(url) => ferry_copier::connect(url, "connect to the target database")
            .await
            .context("open the target database")?,
        None => source.clone(),
    };
    MoveBuffer::open(ctx.store.clone(), migration, source, target)
        .await
        .with_context(|| format!("open the update buffer of {migration}"))
}

pub async fn apply(
    ctx: &Context,
    migration: &MigrationId,
    tenants: Vec<TenantId>,
    urls: &DataUrls,
    options: Options,
) -> anyhow::Result<ExitCode> {
    // Opening reads both catalogues; following, a side that is down is waited for.
    let buffer = loop {
        match open(ctx, migration, urls).await {
            Ok(buffer) => break buffer,
            Err(e) if options.follow => {
                eprintln!("{e:#}; trying again in {}s", options.interval.as_secs());
                tokio::time::sleep(options.interval).await;
            }
            Err(e) => return Err(e),
        }
    };
    let tenants = if tenants.is_empty() {
        super::all_tenants(ctx, migration).await?
    } else {
        tenants
    };
    loop {
        let report = pass(&buffer, &tenants).await?;
        if options.json {
            output::json(&report)?;
        } else {
            print_pass(&report);
        }
        if !options.follow {
            // Work left (a side unreachable, a change refused) is not success: a script
            // waiting on the buffer-drained guard should know.
            return Ok(if report.failed + report.unreachable == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::NOT_EFFECTIVE)
            });
        }
        tokio::time::sleep(options.interval).await;
    }
}

/// One pass over `tenants`: what `ferry copy run` does after its copies, too.
async fn pass(buffer: &MoveBuffer, tenants: &[TenantId]) -> anyhow::Result<PassReport> {
    let mut report = PassReport::default();
    for tenant in tenants {
        let BufferPass {
            applied,
            failed,
            unreachable,
            last_error,
        } = buffer
            .apply(tenant)
            .await
            .with_context(|| format!("apply the update buffer of tenant {tenant}"))?;
        report.applied += applied;
        report.failed += failed;
        report.unreachable += unreachable;
        if failed + unreachable > 0 {
            report.tenants_waiting.push(TenantWaiting {
                tenant: tenant.to_string(),
                failed,
                unreachable,
                last_error,
            });
        }
    }
    Ok(report)
}

fn print_pass(report: &PassReport) {
    println!(
        "update buffer: {} change(s) applied, {} failed (an attempt counted), {} waiting for an unreachable side",
        report.applied, report.failed, report.unreachable
    );
    for t in &report.tenants_waiting {
        eprintln!(
            "  {}: {} failed, {} unreachable: {}",
            t.tenant,
            t.failed,
            t.unreachable,
            t.last_error.as_deref().unwrap_or("")
        );
    }
}

/// The pass after `ferry copy run`'s copies, printed; its failures do not fail the run (the
/// buffer-drained guard holds the phase changes that need it).
pub(super) async fn after_copies(
    ctx: &Context,
    migration: &MigrationId,
    urls: &DataUrls,
    tenants: &[TenantId],
) -> anyhow::Result<()> {
    let buffer = open(ctx, migration, urls).await?;
    let report = pass(&buffer, tenants).await?;
    if report.applied + report.failed + report.unreachable > 0 {
        print_pass(&report);
    }
    Ok(())
}
