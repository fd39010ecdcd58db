//! `ferry schema status`: the change's state in the application's database, the version
//! schema, the tenants per phase and each tenant's backfill, from the control store.

use std::process::ExitCode;

use anyhow::Context as _;
use ferry_api::CopyProgressView;
use ferry_domain::Phase;
use ferry_schema::Plan;
use ferry_store::{CopyDirection, TenantRecord};
use serde::Serialize;

use super::{Change, PlanErrors};
use crate::context::Context;
use crate::output;

#[derive(Serialize)]
struct StatusView {
    migration: String,
    /// `not started`, `starting`, `started`, `completing`, `completed`, `rolling_back`,
    /// `rolled_back`.
    state: String,
    schema: String,
    version_schema: String,
    /// What an application sets to use the new version (while the change is started).
    search_path: String,
    /// Every phase, in order, with its tenant count.
    phases: Vec<PhaseCount>,
    /// Tenants past legacy or with backfill progress.
    tenants: Vec<TenantBackfill>,
}

#[derive(Serialize)]
struct PhaseCount {
    phase: String,
    tenants: u64,
}

#[derive(Serialize)]
struct TenantBackfill {
    tenant: String,
    phase: String,
    paused: bool,
    /// The backfill in the tenant's current copy epoch (forward; reverse in target_primary).
    backfill: Option<CopyProgressView>,
}

pub(super) async fn show(ctx: &Context, change: &Change, json: bool) -> anyhow::Result<ExitCode> {
    let view = build(ctx, change).await?;
    if json {
        output::json(&view)?;
    } else {
        print(&view);
    }
    Ok(ExitCode::SUCCESS)
}

async fn build(ctx: &Context, change: &Change) -> anyhow::Result<StatusView> {
    let m = &change.migration;
    let plan = Plan::from_json(&change.plan)
        .map_err(PlanErrors)
        .with_context(|| format!("read the plan of {m}"))?;
    let schema = plan.settings.schema;
    let version_schema = format!("{schema}_{m}");
    let state = super::state_name(change.state().await?);
    let records = super::super::all_tenant_records(ctx, m).await?;
    let progress = ctx
        .store
        .progress(m, None)
        .await
        .context("read the backfill's progress")?;
    let phases = Phase::ALL
        .iter()
        .map(|p| PhaseCount {
            phase: p.as_str().to_owned(),
            tenants: records.iter().filter(|r| r.state.phase == *p).count() as u64,
        })
        .collect();
    let tenants = records
        .iter()
        .filter_map(|r| {
            let backfill = progress
                .iter()
                .filter(|p| p.tenant == r.tenant && p.epoch == r.copy_epoch)
                .find(|p| p.direction == direction_of(r))
                .map(CopyProgressView::from);
            (r.state.phase != Phase::Legacy || backfill.is_some()).then(|| TenantBackfill {
                tenant: r.tenant.to_string(),
                phase: r.state.phase.as_str().to_owned(),
                paused: r.state.paused,
                backfill,
            })
        })
        .collect();
    Ok(StatusView {
        migration: m.to_string(),
        state: state.to_owned(),
        search_path: format!("{version_schema}, {schema}"),
        schema,
        version_schema,
        phases,
        tenants,
    })
}

/// The backfill that counts in the tenant's phase: the reverse one in target_primary.
fn direction_of(r: &TenantRecord) -> CopyDirection {
    match r.state.phase {
        Phase::TargetPrimary => CopyDirection::Reverse,
        _ => CopyDirection::Forward,
    }
}

fn print(v: &StatusView) {
    println!("migration       {}", v.migration);
    println!("state           {}", v.state);
    println!("schema          {}", v.schema);
    println!("version schema  {}", v.version_schema);
    if v.state == "started" {
        println!("new version     SET search_path TO {}", v.search_path);
    }
    let phases: Vec<String> = v
        .phases
        .iter()
        .map(|p| format!("{} {}", p.phase, p.tenants))
        .collect();
    println!("tenants         {}", phases.join(", "));
    if v.tenants.is_empty() {
        println!("no tenant is past legacy yet");
        return;
    }
    println!();
    let rows: Vec<Vec<String>> = v.tenants.iter().map(row).collect();
    output::table(
        &["tenant", "phase", "backfill", "rows", "rate", "held by"],
        &rows,
    );
}

fn row(t: &TenantBackfill) -> Vec<String> {
    let phase = if t.paused {
        format!("{} (paused)", t.phase)
    } else {
        t.phase.clone()
    };
    let Some(p) = &t.backfill else {
        let state = match t.phase.as_str() {
            "dual_write" | "shadow" => "not started",
            _ => "",
        };
        return vec![
            t.tenant.clone(),
            phase,
            state.into(),
            String::new(),
            String::new(),
            String::new(),
        ];
    };
    let state = match (p.complete, p.direction.as_str()) {
        (true, "reverse") => "reverse sync recorded",
        (true, _) => "complete",
        (false, _) => "running or stopped",
    };
    vec![
        t.tenant.clone(),
        phase,
        state.into(),
        format!(
            "{} / {}",
            output::count(p.rows_done),
            output::count(p.rows_total)
        ),
        if p.complete {
            String::new()
        } else {
            format!("{:.0} rows/s", p.rows_per_s)
        },
        p.throttled.clone().unwrap_or_default(),
    ]
}
