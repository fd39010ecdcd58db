//! The demo's story: the operator's steps, the simulated traffic between them, and the
//! pauses and rollbacks injected between rounds. Every step waits for both routers to
//! acknowledge it before the next, as a real rollout must.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_domain::{Action, Cohort, MigrationId, Phase, TenantId};
use ferry_engine::{PhaseEngine, Request, RolloutReport};
use ferry_move::RouteDecision;
use ferry_router::{RouteOp, Router};
use ferry_store::{BackfillProgress, ControlStore, CopyDirection, TenantQuery};
use indicatif::ProgressBar;

use super::SplitMix;

pub(super) struct Demo {
    pub(super) store: Arc<dyn ControlStore>,
    pub(super) engine: PhaseEngine,
    pub(super) migration: MigrationId,
    pub(super) actor: String,
    pub(super) bar: ProgressBar,
    pub(super) steps: usize,
    /// The application processes: each routes simulated requests after every step.
    pub(super) routers: Vec<Router>,
    pub(super) tenants: Vec<TenantId>,
    pub(super) traffic: SplitMix,
    pub(super) step_delay: Duration,
}

impl Demo {
    pub(super) fn say(&self, line: impl AsRef<str>) {
        self.bar.suspend(|| println!("{}", line.as_ref()));
    }

    fn request(&self, reason: &str) -> Request {
        Request {
            actor: self.actor.clone(),
            reason: reason.to_owned(),
            force: false,
            dry_run: false,
            expect_phase: None,
        }
    }

    /// Applies an action to a cohort, waits until both routers acknowledge it, and narrates.
    async fn step(
        &mut self,
        label: &str,
        cohort: &Cohort,
        action: Action,
        reason: &str,
    ) -> anyhow::Result<RolloutReport> {
        let report = self
            .engine
            .rollout(
                &self.migration,
                cohort,
                action,
                &self.request(reason),
                |_, _| {},
            )
            .await
            .with_context(|| format!("{label}: {action}"))?;
        let version = report.change_version();
        if version > 0 {
            let ack = self
                .engine
                .wait_acknowledged(version, Duration::from_secs(30))
                .await
                .context("wait for the routers")?;
            anyhow::ensure!(
                ack.effective(),
                "{label}: routers {:?} did not acknowledge change {version}",
                ack.lagging
            );
        }
        self.steps += 1;
        self.serve_requests(200)?;
        if !self.step_delay.is_zero() {
            tokio::time::sleep(self.step_delay).await;
        }
        let mut moves: std::collections::BTreeMap<(Phase, Phase), usize> = Default::default();
        for m in &report.moved {
            *moves.entry((m.from.phase, m.to_phase)).or_default() += 1;
        }
        let moved: Vec<String> = moves
            .iter()
            .map(|((from, to), n)| {
                if from == to {
                    format!("{n} {action}d in {from}")
                } else {
                    format!("{n} {from}→{to}")
                }
            })
            .collect();
        let mut line = format!(
            "  {label:<9} {action:<8} {}",
            if moved.is_empty() {
                "nothing moved".to_owned()
            } else {
                moved.join(", ")
            }
        );
        for (reason, n) in report.refusal_summary() {
            line.push_str(&format!("; refused {n}: {reason}"));
        }
        self.say(line);
        self.update_bar().await?;
        Ok(report)
    }

    /// Each router routes `n` simulated requests (4 reads to 1 write) for random tenants, by
    /// the phase in its cache, counting each decision.
    fn serve_requests(&mut self, n: usize) -> anyhow::Result<()> {
        for router in &self.routers {
            let snapshot = router.snapshot()?;
            for _ in 0..n {
                let pick = self.traffic.next();
                let tenant = &self.tenants[(pick % self.tenants.len() as u64) as usize];
                let phase = snapshot
                    .phase(self.migration.as_str(), tenant.as_str())
                    .phase;
                let (op, decision) = if pick.is_multiple_of(5) {
                    (RouteOp::Write, RouteDecision::write(phase))
                } else {
                    (RouteOp::Read, RouteDecision::read(phase))
                };
                let (reason, phase) = decision.reason_label();
                router.record_route(
                    self.migration.as_str(),
                    op,
                    phase,
                    decision.path_label(),
                    reason,
                );
            }
        }
        Ok(())
    }

    /// Records, for every tenant of the cohort now in dual_write, the backfill the copier
    /// would have done.
    async fn backfill(&self, members: &[TenantId]) -> anyhow::Result<usize> {
        let mut done = 0;
        for t in members {
            let record = self.store.tenant(&self.migration, t).await?;
            if record.state.phase != Phase::DualWrite || record.state.paused {
                continue;
            }
            self.store
                .record_backfill(&BackfillProgress {
                    migration: self.migration.clone(),
                    tenant: t.clone(),
                    direction: CopyDirection::Forward,
                    rows_done: record.rows,
                    rows_total: record.rows,
                    complete: true,
                    last_key: None,
                    batch_size: 0,
                    rows_per_s: 0.0,
                    throttled: None,
                    updated_at: None,
                    epoch: record.copy_epoch,
                })
                .await?;
            done += 1;
        }
        Ok(done)
    }

    /// Advances the cohort's unfinished members until every one is complete, backfilling as
    /// needed, calling `events` after each round so the story can pause, roll back and resume
    /// tenants.
    pub(super) async fn drive(
        &mut self,
        label: &str,
        cohort: Cohort,
        mut events: impl AsyncEvents,
    ) -> anyhow::Result<()> {
        let unfinished = |records: Vec<ferry_store::TenantRecord>| -> Vec<TenantId> {
            records
                .into_iter()
                .filter(|t| t.state.phase != Phase::Complete)
                .map(|t| t.tenant)
                .collect()
        };
        let members = unfinished(self.store.cohort(&self.migration, &cohort).await?);
        self.say(format!("{label}: {} tenants to move", members.len()));
        for round in 0.. {
            anyhow::ensure!(round < 40, "{label}: cohort did not complete in 40 rounds");
            let remaining = unfinished(
                self.store
                    .cohort(&self.migration, &Cohort::Explicit(members.clone()))
                    .await?,
            );
            if remaining.is_empty() {
                break;
            }
            let backfilled = self.backfill(&remaining).await?;
            if backfilled > 0 {
                self.say(format!(
                    "  {label:<9} copier   {backfilled} backfilled (simulated: the demo has no database to copy)"
                ));
            }
            self.step(
                label,
                &Cohort::Explicit(remaining),
                Action::Advance,
                "rollout",
            )
            .await?;
            events.after(self, round).await?;
        }
        Ok(())
    }

    async fn update_bar(&self) -> anyhow::Result<()> {
        let status = self.store.status().await?;
        let position: u64 = status
            .iter()
            .map(|c| c.tenants * c.phase.ordinal() as u64)
            .sum();
        self.bar.set_position(position);
        Ok(())
    }
}

/// Story events injected between rounds.
pub(super) trait AsyncEvents {
    async fn after(&mut self, demo: &mut Demo, round: usize) -> anyhow::Result<()>;
}

/// Canary: pause three tenants in shadow, roll two back from target_primary, resume.
pub(super) struct CanaryStory {
    pub(super) paused: Vec<TenantId>,
}

impl AsyncEvents for CanaryStory {
    async fn after(&mut self, demo: &mut Demo, round: usize) -> anyhow::Result<()> {
        match round {
            1 => {
                let shadow = tenants_in(demo, Phase::Shadow, 3).await?;
                demo.step(
                    "canary",
                    &Cohort::Explicit(shadow.clone()),
                    Action::Pause,
                    "on-call is investigating latency",
                )
                .await?;
                self.paused = shadow;
            }
            2 => {
                let primary = tenants_in(demo, Phase::TargetPrimary, 2).await?;
                demo.step(
                    "canary",
                    &Cohort::Explicit(primary),
                    Action::Rollback,
                    "fallback rate above 1%",
                )
                .await?;
            }
            3 => {
                demo.step(
                    "canary",
                    &Cohort::Explicit(self.paused.clone()),
                    Action::Resume,
                    "latency explained",
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The rest: pause five early, roll three back from shadow, resume the five later.
pub(super) struct FleetStory {
    pub(super) paused: Vec<TenantId>,
}

impl AsyncEvents for FleetStory {
    async fn after(&mut self, demo: &mut Demo, round: usize) -> anyhow::Result<()> {
        match round {
            0 => {
                let dual = tenants_in(demo, Phase::DualWrite, 5).await?;
                demo.step(
                    "fleet",
                    &Cohort::Explicit(dual.clone()),
                    Action::Pause,
                    "customer freeze window",
                )
                .await?;
                self.paused = dual;
            }
            1 => {
                let shadow = tenants_in(demo, Phase::Shadow, 3).await?;
                demo.step(
                    "fleet",
                    &Cohort::Explicit(shadow),
                    Action::Rollback,
                    "shadow reads mismatched",
                )
                .await?;
            }
            3 => {
                demo.step(
                    "fleet",
                    &Cohort::Explicit(self.paused.clone()),
                    Action::Resume,
                    "freeze over",
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

async fn tenants_in(demo: &Demo, phase: Phase, n: u64) -> anyhow::Result<Vec<TenantId>> {
    Ok(demo
        .store
        .tenants(
            &demo.migration,
            &TenantQuery {
                phase: Some(phase),
                paused: Some(false),
                limit: Some(n),
                ..TenantQuery::default()
            },
        )
        .await?
        .into_iter()
        .map(|t| t.tenant)
        .collect())
}
