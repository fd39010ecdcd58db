//! The operator's side of the act: cohorts moved through the phases as `ferry rollout`
//! does, archiving, the injected object-store fault, a step back with its restore, hot-copy
//! deletion.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry_domain::{Action, Cohort, Phase, TenantId};

use super::{Act, TierSummary};
use crate::output;

impl Act {
    pub(super) async fn play(&self) -> anyhow::Result<TierSummary> {
        let tenants = self.scenario.tenants.clone();
        let split = (tenants.len() / 10).max(2);
        let (canary, fleet) = tenants.split_at(split);
        let mut summary = TierSummary {
            tenants: tenants.len(),
            ..TierSummary::default()
        };
        self.advance("canary", canary, Phase::DualWrite, "tiering canary")
            .await?;
        self.archive("canary", canary, &mut summary).await?;
        self.advance("canary", canary, Phase::Shadow, "archive validated")
            .await?;
        self.advance("canary", canary, Phase::TargetPrimary, "cold reads agree")
            .await?;
        self.cold_store_outage().await?;
        self.advance("canary", canary, Phase::TargetOnly, "cold tier serves well")
            .await?;
        summary.hot_copies_deleted += self.delete_hot_copies(canary).await?;
        let back = &canary[..1];
        self.advance("canary", back, Phase::TargetPrimary, "step back: restore")
            .await?;
        summary.rows_restored += self.tiering.restore(&back[0]).await?;
        self.say(format!(
            "  canary    restore  {} archived rows of {} written back to the hot table",
            output::count(summary.rows_restored),
            back[0]
        ));
        self.advance("canary", back, Phase::TargetOnly, "restored; forward again")
            .await?;
        summary.hot_copies_deleted += self.delete_hot_copies(back).await?;
        self.advance("canary", canary, Phase::Complete, "canary done")
            .await?;

        self.say(format!(
            "\ntiering fleet: the other {} tenants",
            fleet.len()
        ));
        self.advance("fleet", fleet, Phase::DualWrite, "fleet rollout")
            .await?;
        self.archive("fleet", fleet, &mut summary).await?;
        for (phase, reason) in [
            (Phase::Shadow, "archive validated"),
            (Phase::TargetPrimary, "cold reads agree"),
            (Phase::TargetOnly, "cold tier serves well"),
        ] {
            self.advance("fleet", fleet, phase, reason).await?;
        }
        summary.hot_copies_deleted += self.delete_hot_copies(fleet).await?;
        self.advance("fleet", fleet, Phase::Complete, "fleet done")
            .await?;
        Ok(summary)
    }

    /// Moves `tenants` one phase at a time until each is in `to` (a rollback when `to` is
    /// behind), as cohort rollouts; a tenant refused because its buffer is not drained yet
    /// has it applied and is tried again. Waits for both routers each time.
    async fn advance(
        &self,
        label: &str,
        tenants: &[TenantId],
        to: Phase,
        reason: &str,
    ) -> anyhow::Result<()> {
        let s = &self.scenario;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut behind = Vec::new();
            let mut ahead = Vec::new();
            for t in tenants {
                let now = s.store.tenant(&self.migration, t).await?.state.phase;
                if now < to {
                    behind.push(t.clone());
                } else if now > to {
                    ahead.push(t.clone());
                }
            }
            if behind.is_empty() && ahead.is_empty() {
                self.say(format!(
                    "  {label:<9} {to:<15} {} tenant(s): {reason}",
                    tenants.len()
                ));
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{label}: tenants never reached {to}"
            );
            for (group, action) in [(behind, Action::Advance), (ahead, Action::Rollback)] {
                if group.is_empty() {
                    continue;
                }
                let report = s
                    .engine
                    .rollout(
                        &self.migration,
                        &Cohort::Explicit(group.clone()),
                        action,
                        &self.request(reason),
                        |_, _| {},
                    )
                    .await
                    .with_context(|| format!("{label}: {action} to {to}"))?;
                for refused in &report.refused {
                    self.tiering.apply_buffer(&refused.tenant).await?;
                }
                self.acknowledged(report.change_version()).await?;
            }
        }
    }

    async fn acknowledged(&self, version: i64) -> anyhow::Result<()> {
        if version == 0 {
            return Ok(());
        }
        for router in &self.scenario.routers {
            router.nudge();
        }
        let ack = self
            .scenario
            .engine
            .wait_acknowledged(version, Duration::from_secs(30))
            .await?;
        anyhow::ensure!(ack.effective(), "routers {:?} lag", ack.lagging);
        Ok(())
    }

    async fn archive(
        &self,
        label: &str,
        tenants: &[TenantId],
        summary: &mut TierSummary,
    ) -> anyhow::Result<()> {
        let cutoff = Self::cutoff();
        let (mut rows, mut segments, mut requeued) = (0, 0, 0);
        for t in tenants {
            let report = self
                .tiering
                .archive(t, &cutoff)
                .await
                .with_context(|| format!("{label}: archive {t}"))?;
            if let Some(why) = report.paused {
                anyhow::bail!("{label}: archiving {t} paused: {why}");
            }
            rows += report.rows;
            segments += report.segments;
            requeued += report.requeued;
            self.bar.inc(report.rows);
        }
        summary.rows_archived += rows;
        summary.segments += segments;
        self.say(format!(
            "  {label:<9} archive  {} rows of {} tenant(s) in {segments} Parquet segment(s), each read back ({requeued} changed meanwhile, re-sent through the buffer)",
            output::count(rows),
            tenants.len()
        ));
        Ok(())
    }

    async fn delete_hot_copies(&self, tenants: &[TenantId]) -> anyhow::Result<u64> {
        let mut deleted = 0;
        for t in tenants {
            deleted += self.tiering.delete_hot_copies(t, 500).await?;
        }
        self.say(format!(
            "  {:<9} delete   {} hot copies of archived rows",
            "",
            output::count(deleted)
        ));
        Ok(deleted)
    }

    /// The object store goes away (its directory replaced by a file) while the canary is
    /// in `target_primary`: reads of archived rows fall back to their hot copies, which the
    /// operator sees counted; then it comes back.
    async fn cold_store_outage(&self) -> anyhow::Result<()> {
        let aside = self.cold_dir.with_extension("away");
        std::fs::rename(&self.cold_dir, &aside).context("take the cold directory away")?;
        std::fs::write(&self.cold_dir, b"not a directory").context("break the cold store")?;
        let fallbacks = || -> u64 {
            self.tables
                .iter()
                .map(|t| t.stats.fallbacks.load(Relaxed))
                .sum()
        };
        let before = fallbacks();
        let deadline = Instant::now() + Duration::from_secs(30);
        while fallbacks() < before + 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = fallbacks() - before;
        std::fs::remove_file(&self.cold_dir).context("remove the broken cold store")?;
        std::fs::rename(&aside, &self.cold_dir).context("bring the cold directory back")?;
        self.say(format!(
            "  canary    fault    object store unavailable: {seen} reads of archived rows fell back to their hot copies; store back"
        ));
        Ok(())
    }
}
