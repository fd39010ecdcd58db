//! The real demo's story: what an operator does, step by step, while the application writes.
//!
//! A stable 10% canary cohort goes first: copied, shadowed, one tenant paused while others
//! advance (its advance is refused), one rolled back for a high fallback rate, then on to
//! `target_only`, where one steps back with a reverse copy, and to `complete` with its source
//! rows deleted. Then the rest, two of them rolled back to `legacy` from `shadow` and moved
//! again from the start. Every step waits for both routers to acknowledge it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_check::Scenario;
use ferry_copier::Outcome;
use ferry_domain::{Action, Cohort, Percent, Phase, TenantId};
use ferry_engine::{Request, RolloutReport};
use ferry_store::CopyDirection;
use indicatif::ProgressBar;

use crate::args::DemoArgs;
use crate::output;

pub(super) struct Story {
    scenario: Arc<Scenario>,
    actor: String,
    bar: ProgressBar,
    quiet: bool,
    step_delay: Duration,
    watch: Duration,
    pub(super) rows_moved: u64,
    pub(super) steps: u64,
}

impl Story {
    pub(super) fn new(scenario: Arc<Scenario>, actor: String, args: &DemoArgs, rows: u64) -> Story {
        let bar = if args.json {
            ProgressBar::hidden()
        } else {
            output::progress(rows, "rows copied")
        };
        Story {
            scenario,
            actor,
            bar,
            quiet: args.json,
            step_delay: Duration::from_millis(args.step_delay_ms),
            watch: super::real::Scale::of(args).watch,
            rows_moved: 0,
            steps: 0,
        }
    }

    pub(super) fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            self.bar.suspend(|| println!("{}", line.as_ref()));
        }
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }

    pub(super) async fn play(&mut self) -> anyhow::Result<()> {
        let s = self.scenario.clone();
        let mut canary: Vec<TenantId> = s
            .store
            .cohort(&s.migration, &Cohort::Percent(Percent::parse("10")?))
            .await?
            .into_iter()
            .map(|t| t.tenant)
            .collect();
        for t in &s.tenants {
            if canary.len() >= 2 {
                break;
            }
            if !canary.contains(t) {
                canary.push(t.clone());
            }
        }
        let rest: Vec<TenantId> = s
            .tenants
            .iter()
            .filter(|t| !canary.contains(t))
            .cloned()
            .collect();
        self.canary(&canary).await?;
        self.fleet(&rest).await
    }

    async fn canary(&mut self, c: &[TenantId]) -> anyhow::Result<()> {
        self.say(format!(
            "\ncanary: {} tenants (a stable 10% cohort)",
            c.len()
        ));
        self.step(
            "canary",
            c,
            Action::Advance,
            "canary rollout",
            Phase::DualWrite,
        )
        .await?;
        self.copy("canary", c, CopyDirection::Forward).await?;
        self.step(
            "canary",
            c,
            Action::Advance,
            "backfill validated",
            Phase::Shadow,
        )
        .await?;
        self.watch_shadow("canary").await;
        let (held, flaky) = (&c[..1], &c[1..2]);
        self.step(
            "canary",
            held,
            Action::Pause,
            "on-call is looking at p99 latency",
            Phase::Shadow,
        )
        .await?;
        // The paused tenant's advance is refused; the others go on.
        self.rollout("canary", c, Action::Advance, "shadow reads agree")
            .await?;
        self.step(
            "canary",
            flaky,
            Action::Rollback,
            "fallback rate above 1%",
            Phase::Shadow,
        )
        .await?;
        self.step(
            "canary",
            held,
            Action::Resume,
            "latency explained",
            Phase::Shadow,
        )
        .await?;
        let behind: Vec<TenantId> = [held, flaky].concat();
        self.step(
            "canary",
            &behind,
            Action::Advance,
            "caught up",
            Phase::TargetPrimary,
        )
        .await?;
        self.step(
            "canary",
            c,
            Action::Advance,
            "target serves well",
            Phase::TargetOnly,
        )
        .await?;
        self.step(
            "canary",
            held,
            Action::Rollback,
            "a customer reports a missing invoice",
            Phase::TargetPrimary,
        )
        .await?;
        self.copy("canary", held, CopyDirection::Reverse).await?;
        self.step(
            "canary",
            held,
            Action::Advance,
            "invoice found; reverse copy validated",
            Phase::TargetOnly,
        )
        .await?;
        self.step("canary", c, Action::Advance, "canary done", Phase::Complete)
            .await?;
        self.retire("canary", c).await
    }

    async fn fleet(&mut self, r: &[TenantId]) -> anyhow::Result<()> {
        self.say(format!("\nfleet: the other {} tenants", r.len()));
        self.step(
            "fleet",
            r,
            Action::Advance,
            "fleet rollout",
            Phase::DualWrite,
        )
        .await?;
        self.copy("fleet", r, CopyDirection::Forward).await?;
        self.step(
            "fleet",
            r,
            Action::Advance,
            "backfill validated",
            Phase::Shadow,
        )
        .await?;
        self.watch_shadow("fleet").await;
        let (again, on) = r.split_at(2);
        self.step(
            "fleet",
            again,
            Action::Rollback,
            "shadow reads mismatched",
            Phase::Legacy,
        )
        .await?;
        for (phase, reason) in [
            (Phase::TargetPrimary, "shadow reads agree"),
            (Phase::TargetOnly, "target serves well"),
            (Phase::Complete, "fleet done"),
        ] {
            self.step("fleet", on, Action::Advance, reason, phase)
                .await?;
        }
        self.retire("fleet", on).await?;
        self.say("  fleet     the two rolled back start over: a new copy epoch");
        self.step(
            "fleet",
            again,
            Action::Advance,
            "mismatch explained",
            Phase::DualWrite,
        )
        .await?;
        self.copy("fleet", again, CopyDirection::Forward).await?;
        for (phase, reason) in [
            (Phase::Shadow, "backfill validated"),
            (Phase::TargetPrimary, "shadow reads agree"),
            (Phase::TargetOnly, "target serves well"),
            (Phase::Complete, "done"),
        ] {
            self.step("fleet", again, Action::Advance, reason, phase)
                .await?;
        }
        self.retire("fleet", again).await
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

    /// One action on a cohort, as `ferry rollout` does it, narrated; waits for both routers.
    async fn rollout(
        &mut self,
        label: &str,
        tenants: &[TenantId],
        action: Action,
        reason: &str,
    ) -> anyhow::Result<RolloutReport> {
        let s = &self.scenario;
        let cohort = Cohort::Explicit(tenants.to_vec());
        let report = s
            .engine
            .rollout(
                &s.migration,
                &cohort,
                action,
                &self.request(reason),
                |_, _| {},
            )
            .await
            .with_context(|| format!("{label}: {action}"))?;
        let version = report.change_version();
        if version > 0 {
            for router in &s.routers {
                router.nudge();
            }
            let ack = s
                .engine
                .wait_acknowledged(version, Duration::from_secs(30))
                .await?;
            anyhow::ensure!(ack.effective(), "{label}: routers {:?} lag", ack.lagging);
        }
        self.steps += report.moved.len() as u64;
        let mut line = format!(
            "  {label:<9} {action:<8} {:>3} tenant(s): {reason}",
            report.moved.len()
        );
        for (why, n) in report.refusal_summary() {
            line.push_str(&format!("; refused {n}: {why}"));
        }
        self.say(line);
        if !self.step_delay.is_zero() {
            tokio::time::sleep(self.step_delay).await;
        }
        Ok(report)
    }

    /// Lets the clients run in `shadow` for a while, as an operator watches reads compared
    /// with the target before giving it authority; says what the comparisons found.
    async fn watch_shadow(&self, label: &str) {
        use std::sync::atomic::Ordering::Relaxed;
        let compared = |s: &Scenario| -> (u64, u64) {
            s.tables.iter().fold((0, 0), |(r, m), t| {
                (
                    r + t.stats.reads_target.load(Relaxed),
                    m + t.stats.shadow_mismatches.load(Relaxed),
                )
            })
        };
        let before = compared(&self.scenario);
        // The operator's observation window: the pacing of the story, not a synchronisation.
        tokio::time::sleep(self.watch).await;
        let after = compared(&self.scenario);
        self.say(format!(
            "  {label:<9} shadow   {} reads compared with the target in {}s: {} differed",
            output::count(after.0 - before.0),
            self.watch.as_secs(),
            after.1 - before.1
        ));
    }

    /// A rollout that must leave every tenant in `phase`: members refused for a passing
    /// reason (a router catching up) are changed one by one, with retries.
    async fn step(
        &mut self,
        label: &str,
        tenants: &[TenantId],
        action: Action,
        reason: &str,
        phase: Phase,
    ) -> anyhow::Result<()> {
        self.rollout(label, tenants, action, reason).await?;
        let s = self.scenario.clone();
        for t in tenants {
            if s.store.tenant(&s.migration, t).await?.state.phase != phase {
                let reached = s.change(t, action).await?;
                self.steps += 1;
                anyhow::ensure!(
                    reached == phase,
                    "{t}: {action} reached {reached}, not {phase}"
                );
            }
        }
        Ok(())
    }

    /// Copies each tenant (forward or back), every batch validated; anything but a clean
    /// completion stops the demo.
    async fn copy(
        &mut self,
        label: &str,
        tenants: &[TenantId],
        direction: CopyDirection,
    ) -> anyhow::Result<()> {
        let s = self.scenario.clone();
        let mut rows = 0;
        let mut repaired = 0;
        for t in tenants {
            let base = self.rows_moved + rows;
            let bar = self.bar.clone();
            let outcome = s
                .copier
                .copy(t, direction, |p| bar.set_position(base + p.rows_done))
                .await
                .with_context(|| format!("{label}: copy {t}"))?;
            match outcome {
                Outcome::Complete {
                    rows: n,
                    repaired: r,
                    mismatches: 0,
                    ..
                } => {
                    rows += n;
                    repaired += r;
                }
                other => anyhow::bail!(
                    "{label}: the {} copy of {t} ended {other:?}",
                    direction.as_str()
                ),
            }
        }
        self.rows_moved += rows;
        if self.bar.length().unwrap_or(0) < self.rows_moved {
            self.bar.set_length(self.rows_moved);
        }
        self.say(format!(
            "  {label:<9} copy     {} rows of {} tenant(s) {}, every batch validated ({repaired} repaired)",
            output::count(rows),
            tenants.len(),
            direction.as_str()
        ));
        Ok(())
    }

    /// Deletes completed tenants' rows from the source.
    async fn retire(&mut self, label: &str, tenants: &[TenantId]) -> anyhow::Result<()> {
        let mut deleted = 0;
        for t in tenants {
            deleted += self
                .scenario
                .copier
                .retire_source(t, |_| {})
                .await
                .with_context(|| format!("{label}: delete {t}'s source rows"))?;
        }
        self.say(format!(
            "  {label:<9} retire   {} source rows of {} complete tenant(s) deleted",
            output::count(deleted),
            tenants.len()
        ));
        Ok(())
    }
}
