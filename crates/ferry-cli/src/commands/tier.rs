//! `ferry tier …` and `ferry buffer …`: the archiver and the update buffer of a tiering
//! migration.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use ferry_api::OpsError;
use ferry_domain::{MigrationId, Phase, TenantId};
use ferry_tier::Tiering;
use serde::Serialize;

use crate::args::{BufferCmd, TierCmd};
use crate::context::Context;
use crate::{exit, output};

/// Reservations older than this are a crashed run's leftovers.
const STALE_RESERVATION: Duration = Duration::from_secs(3600);

/// Per tenant: failed attempts in a row, and when the next one may start.
type Backoff = std::collections::HashMap<TenantId, (u32, std::time::Instant)>;

pub async fn run(ctx: &Context, cmd: TierCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TierCmd::Run {
            migration,
            tenants,
            hot_url,
            older_than,
            cutoff,
            delete_batch,
            follow,
            interval,
        } => {
            let tiering = open_tiering(ctx, &migration, &hot_url).await?;
            if let Some(c) = &cutoff {
                chrono::DateTime::parse_from_rfc3339(c)
                    .with_context(|| format!("--cutoff {c:?} is not an RFC 3339 instant"))?;
            }
            let named = tenants;
            let mut backoff = Backoff::new();
            loop {
                let tenants = if named.is_empty() {
                    super::all_tenants(ctx, &migration).await?
                } else {
                    named.clone()
                };
                let cutoff = cutoff_now(older_than, cutoff.as_deref())?;
                let failed = pass(
                    ctx,
                    &tiering,
                    &tenants,
                    cutoff.as_deref(),
                    delete_batch,
                    &mut backoff,
                )
                .await;
                let collected = tiering.collect_garbage(STALE_RESERVATION).await?;
                if collected > 0 {
                    eprintln!("collected {collected} replaced segment(s)");
                }
                if !follow {
                    return Ok(if failed > 0 {
                        ExitCode::from(exit::REFUSED)
                    } else {
                        ExitCode::SUCCESS
                    });
                }
                tokio::time::sleep(Duration::from_secs(interval.max(1))).await;
            }
        }
        TierCmd::Status { migration, json } => status(ctx, &migration, json).await,
    }
}

async fn open_tiering(
    ctx: &Context,
    migration: &MigrationId,
    hot_url: &str,
) -> anyhow::Result<Tiering> {
    let pool = sqlx::PgPool::connect(hot_url).await.with_context(|| {
        format!(
            "connect to the hot database {}",
            ferry_store::redact_url(hot_url)
        )
    })?;
    Tiering::open(ctx.store.clone(), migration, pool)
        .await
        .with_context(|| format!("open tiering migration {migration}"))
}

/// The cutoff of this pass: with `--older-than`, now minus the age (it moves with the clock);
/// otherwise `--cutoff` as given.
fn cutoff_now(
    older_than: Option<Duration>,
    cutoff: Option<&str>,
) -> anyhow::Result<Option<String>> {
    Ok(match (older_than, cutoff) {
        (Some(age), _) => {
            let age = chrono::Duration::from_std(age).context("--older-than is too large")?;
            Some((chrono::Utc::now() - age).to_rfc3339())
        }
        (None, c) => c.map(str::to_owned),
    })
}

/// One pass over the tenants, skipping those still backing off; returns how many failed.
async fn pass(
    ctx: &Context,
    tiering: &Tiering,
    tenants: &[TenantId],
    cutoff: Option<&str>,
    delete_batch: usize,
    backoff: &mut Backoff,
) -> usize {
    let mut failed = 0;
    for tenant in tenants {
        if backoff
            .get(tenant)
            .is_some_and(|(_, until)| std::time::Instant::now() < *until)
        {
            continue;
        }
        match work_on(ctx, tiering, tenant, cutoff, delete_batch).await {
            Ok(()) => {
                backoff.remove(tenant);
            }
            Err(e) => {
                failed += 1;
                let attempts = backoff.get(tenant).map_or(0, |(n, _)| *n) + 1;
                let wait = retry_delay(attempts, tenant);
                eprintln!(
                    "{tenant}: {e:#} (attempt {attempts}; next in {:.1}s)",
                    wait.as_secs_f64()
                );
                backoff.insert(tenant.clone(), (attempts, std::time::Instant::now() + wait));
            }
        }
    }
    failed
}

/// How long a tenant whose work failed `attempts` times in a row waits: doubling from one
/// second, at most five minutes, with ±25% jitter (seeded by tenant and attempt) so tenants
/// failing together do not retry in step.
pub(crate) fn retry_delay(attempts: u32, tenant: &TenantId) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(16)))
        .min(Duration::from_secs(300));
    let seed = tenant
        .as_str()
        .bytes()
        .chain(attempts.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let jitter = 0.75 + 0.5 * ((seed % 1000) as f64 / 1000.0);
    base.mul_f64(jitter)
}

/// Does whatever the tenant's phase calls for: reset in `legacy`; otherwise, once every
/// router routes by the phase, archive, apply the buffer, then restore or delete hot copies.
async fn work_on(
    ctx: &Context,
    tiering: &Tiering,
    tenant: &TenantId,
    cutoff: Option<&str>,
    delete_batch: usize,
) -> anyhow::Result<()> {
    let record = ctx.store.tenant(&tiering.migration, tenant).await?;
    let phase = record.state.phase;
    if phase == Phase::Legacy {
        return reset(ctx, tiering, tenant).await;
    }
    // Archiving changes where keys live: every router must route by this phase first, or a
    // router still on `legacy` could write an archived key without the buffer.
    let ack = ctx
        .engine()
        .acknowledgement(record.changed_at_version)
        .await?;
    if !ack.effective() {
        eprintln!(
            "{tenant}: waiting for routers {} to acknowledge {phase}; nothing done",
            ack.lagging.join(", ")
        );
        return Ok(());
    }
    if let Some(cutoff) = cutoff {
        archive(tiering, tenant, cutoff).await?;
    }
    let applied = tiering.apply_buffer(tenant).await?;
    if applied > 0 {
        eprintln!("{tenant}: applied {applied} buffered change(s)");
    }
    let recheck = tiering.recheck_mismatches(tenant, phase).await?;
    if recheck != ferry_tier::Recheck::default() {
        eprintln!(
            "{tenant}: re-checked shadow mismatches: {} resolved, {} repaired (re-checked next pass)",
            recheck.resolved, recheck.repaired
        );
    }
    let facts = ctx
        .store
        .guard_facts(
            &tiering.migration,
            &[record],
            ferry_store::DEFAULT_ROUTER_LEASE,
        )
        .await?;
    let source_current = facts.first().is_none_or(|f| f.source_current);
    match phase {
        Phase::TargetPrimary if !source_current => restore(tiering, tenant).await?,
        Phase::TargetOnly | Phase::Complete => {
            delete_hot_copies(tiering, tenant, delete_batch).await?
        }
        _ => {}
    }
    Ok(())
}

/// In `legacy`: a tenant rolled back retires its segments; the hot table is authoritative.
async fn reset(ctx: &Context, tiering: &Tiering, tenant: &TenantId) -> anyhow::Result<()> {
    if ctx
        .store
        .segments(&tiering.migration, tenant)
        .await?
        .is_empty()
    {
        eprintln!("{tenant}: legacy, nothing to do");
    } else {
        let retired = tiering.reset(tenant).await?;
        eprintln!(
            "{tenant}: rolled back to legacy; retired {retired} segment(s), the hot table is authoritative"
        );
    }
    Ok(())
}

async fn archive(tiering: &Tiering, tenant: &TenantId, cutoff: &str) -> anyhow::Result<()> {
    let report = tiering.archive(tenant, cutoff).await?;
    match report.paused {
        Some(why) => eprintln!("{tenant}: archiving paused: {why}"),
        None => eprintln!(
            "{tenant}: archived {} row(s) in {} segment(s){}",
            output::count(report.rows),
            report.segments,
            if report.requeued > 0 {
                format!(
                    ", {} changed meanwhile and re-sent through the buffer",
                    report.requeued
                )
            } else {
                String::new()
            }
        ),
    }
    Ok(())
}

/// In `target_primary` after a step back from `target_only`: archived rows back to hot.
async fn restore(tiering: &Tiering, tenant: &TenantId) -> anyhow::Result<()> {
    let restored = tiering.restore(tenant).await?;
    eprintln!(
        "{tenant}: restored {} archived row(s) to the hot table",
        output::count(restored)
    );
    Ok(())
}

/// In `target_only` and `complete`: the hot copies of archived rows go.
async fn delete_hot_copies(
    tiering: &Tiering,
    tenant: &TenantId,
    delete_batch: usize,
) -> anyhow::Result<()> {
    let deleted = tiering.delete_hot_copies(tenant, delete_batch).await?;
    if deleted > 0 {
        eprintln!(
            "{tenant}: deleted {} archived row(s) from the hot table",
            output::count(deleted)
        );
    }
    Ok(())
}

#[derive(Serialize)]
struct TierStatusView {
    tenant: String,
    phase: String,
    segments: usize,
    archived_rows: u64,
    archived_through: Option<String>,
    buffer_pending: usize,
    buffer_oldest_s: Option<i64>,
}

async fn status(ctx: &Context, migration: &MigrationId, json: bool) -> anyhow::Result<ExitCode> {
    let mut views = Vec::new();
    for tenant in super::all_tenants(ctx, migration).await? {
        let record = ctx.store.tenant(migration, &tenant).await?;
        let segments = ctx.store.segments(migration, &tenant).await?;
        let pending = ctx.store.pending_updates(migration, &tenant).await?;
        views.push(TierStatusView {
            tenant: tenant.to_string(),
            phase: record.state.phase.to_string(),
            segments: segments.len(),
            archived_rows: segments.iter().map(|s| s.rows).sum(),
            archived_through: ctx.store.archived_through(migration, &tenant).await?,
            buffer_pending: pending.len(),
            buffer_oldest_s: pending
                .first()
                .map(|u| (chrono::Utc::now() - u.enqueued_at).num_seconds()),
        });
    }
    if json {
        output::json(&views)?;
    } else {
        let rows: Vec<Vec<String>> = views
            .iter()
            .map(|v| {
                vec![
                    v.tenant.clone(),
                    v.phase.clone(),
                    v.segments.to_string(),
                    output::count(v.archived_rows),
                    v.archived_through.clone().unwrap_or_else(|| "-".into()),
                    v.buffer_pending.to_string(),
                    v.buffer_oldest_s
                        .map(|s| format!("{s}s"))
                        .unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        output::table(
            &[
                "TENANT", "PHASE", "SEGMENTS", "ARCHIVED", "THROUGH", "BUFFERED", "OLDEST",
            ],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn buffer(ctx: &Context, cmd: BufferCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BufferCmd::Apply {
            migration,
            tenants,
            urls,
            follow,
            interval,
            json,
        } => {
            let options = super::move_buffer::Options {
                follow,
                interval: Duration::from_secs(interval),
                json,
            };
            super::move_buffer::apply(ctx, &migration, tenants, &urls, options).await
        }
        BufferCmd::List { migration, json } => {
            let views = ctx.ops.buffer(&migration).await?;
            if json {
                output::json(&views)?;
            } else if views.is_empty() {
                println!("the update buffer of {migration} is empty");
            } else {
                let rows: Vec<Vec<String>> = views
                    .iter()
                    .map(|v| {
                        vec![
                            v.seq.to_string(),
                            v.tenant.clone(),
                            v.key.clone(),
                            v.operation.clone(),
                            v.state.clone(),
                            v.attempts.to_string(),
                            v.last_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                output::table(
                    &[
                        "SEQ",
                        "TENANT",
                        "KEY",
                        "OP",
                        "STATE",
                        "ATTEMPTS",
                        "LAST ERROR",
                    ],
                    &rows,
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BufferCmd::Retry { migration, seq } => {
            match ctx.ops.buffer_retry(&ctx.actor, &migration, seq).await {
                Ok(_) => {
                    println!("change {seq} is pending again");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ OpsError::Refused(_)) => {
                    eprintln!("{e} (see `ferry buffer list {migration}`)");
                    Ok(ExitCode::from(exit::REFUSED))
                }
                Err(e) => Err(e.into()),
            }
        }
        BufferCmd::Drop {
            migration,
            seq,
            reason,
        } => {
            ctx.ops
                .buffer_drop(&ctx.actor, &migration, seq, &reason)
                .await?;
            println!("change {seq} dropped; it will not be applied");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_with_bounded_jitter() {
        let t = TenantId::new("acme").unwrap();
        let mut last = Duration::ZERO;
        for attempts in 1..=6 {
            let d = retry_delay(attempts, &t);
            let base = 2f64.powi(attempts as i32 - 1);
            assert!(
                d.as_secs_f64() >= base * 0.75 && d.as_secs_f64() <= base * 1.25,
                "{d:?}"
            );
            assert!(d > last, "attempt {attempts}: {d:?} after {last:?}");
            last = d;
        }
        assert!(retry_delay(40, &t) <= Duration::from_secs_f64(300.0 * 1.25));
        // Two tenants failing together do not retry at the same instant.
        let other = TenantId::new("globex").unwrap();
        assert_ne!(retry_delay(3, &t), retry_delay(3, &other));
    }
}
