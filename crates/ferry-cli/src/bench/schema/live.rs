//! `--live-load`: a fixed-rate pgbench load alone, beside Ferry's backfill and beside the
//! N `UPDATE`s; its tps and p99 latency against the mean of the two runs alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferry_store::CopyControl;

use super::{Bench, Range};
use crate::bench::Report;
use crate::bench::copy::exec;
use crate::bench::live_load::{LiveLoad, RateSample};

/// The live-load figures.
pub(super) struct Live {
    max_tps: f64,
    rate: f64,
    alone: [RateSample; 2],
    backfill: RateSample,
    backfill_rows_per_s: f64,
    update: RateSample,
}

impl Live {
    pub(super) fn add_to(&self, r: &mut Report) {
        let [a, b] = self.alone;
        let tps_alone = (a.tps + b.tps) / 2.0;
        let p99_alone = (a.p99_ms + b.p99_ms) / 2.0;
        r.figure("live_tps_max", self.max_tps);
        r.figure("live_rate", self.rate);
        r.figure("live_tps_alone", tps_alone);
        r.figure("live_p99_alone_ms", p99_alone);
        r.figure("live_p99_alone_before_ms", a.p99_ms);
        r.figure("live_p99_alone_after_ms", b.p99_ms);
        r.figure("live_p50_alone_ms", (a.p50_ms + b.p50_ms) / 2.0);
        r.figure("live_tps_backfill", self.backfill.tps);
        r.figure("live_p99_backfill_ms", self.backfill.p99_ms);
        r.figure("live_p50_backfill_ms", self.backfill.p50_ms);
        r.figure("live_backfill_rows_per_s", self.backfill_rows_per_s);
        r.figure("live_tps_update", self.update.tps);
        r.figure("live_p99_update_ms", self.update.p99_ms);
        r.ratio("live_tps_kept", self.backfill.tps / tps_alone.max(1e-9));
        r.ratio("live_p99_ratio", self.backfill.p99_ms / p99_alone.max(1e-9));
        r.ratio(
            "live_update_tps_kept",
            self.update.tps / tps_alone.max(1e-9),
        );
        r.ratio(
            "live_update_p99_ratio",
            self.update.p99_ms / p99_alone.max(1e-9),
        );
    }
}

pub(super) async fn live(b: &Bench<'_>, ranges: &[Range]) -> anyhow::Result<Live> {
    let load = LiveLoad::create(&b.pool, &b.args.postgres_url, b.args.duration).await?;
    let result = live_runs(b, &load, ranges).await;
    load.drop_database().await;
    result
}

async fn live_runs(b: &Bench<'_>, load: &LiveLoad, ranges: &[Range]) -> anyhow::Result<Live> {
    let window = Duration::from_secs(b.args.duration);
    exec(&b.pool, "CHECKPOINT".into()).await?;
    let max_tps = load.run().await?;
    let rate = max_tps * b.args.live_rate;
    b.say(format!(
        "pgbench flat out: {max_tps:.0} tps; fixed rate {rate:.0} tps"
    ));
    exec(&b.pool, "CHECKPOINT".into()).await?;
    let alone_before = load.run_at(rate).await?;
    // Ferry's backfill of a second migration is set up first; it starts one second into the
    // load (that second is left out of pgbench's figures) and is paused when the load ends.
    let started = b
        .start(&b.migration("_live"), b.args.live_rate_limit)
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    exec(&b.pool, "CHECKPOINT".into()).await?;
    let (backfill, rows) = tokio::join!(load.run_at(rate), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        let stopper = async {
            tokio::time::sleep(window).await;
            stop.store(true, Ordering::Relaxed);
            let paused = CopyControl {
                paused: true,
                cancelled: false,
                rate_limit: None,
            };
            b.store.set_control(&started.m, None, paused).await
        };
        let hidden = indicatif::ProgressBar::hidden();
        let (rows, paused) = tokio::join!(
            started.backfill_all(b.args.parallel, stop.clone(), &hidden),
            stopper
        );
        paused?;
        Ok::<_, anyhow::Error>((rows?, t0.elapsed()))
    });
    let (backfill, (rows, took)) = (backfill?, rows?);
    let backfill_rows_per_s = rows as f64 / took.as_secs_f64().max(1e-9);
    b.say(format!(
        "beside the backfill: {:.0} tps, p99 {:.1} ms; {backfill_rows_per_s:.0} rows/s",
        backfill.tps, backfill.p99_ms
    ));
    started.runner.rollback().await?;
    exec(&b.pool, format!("VACUUM {}.items", b.s())).await?;
    exec(&b.pool, "CHECKPOINT".into()).await?;
    let (update, updated) = tokio::join!(load.run_at(rate), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        update_for(b, ranges, window).await
    });
    let update = update?;
    updated?;
    exec(&b.pool, format!("VACUUM {}.items", b.s())).await?;
    exec(&b.pool, "CHECKPOINT".into()).await?;
    let alone_after = load.run_at(rate).await?;
    Ok(Live {
        max_tps,
        rate,
        alone: [alone_before, alone_after],
        backfill,
        backfill_rows_per_s,
        update,
    })
}

/// The N `UPDATE`s again and again for `window`, the last one cancelled when it runs out.
async fn update_for(b: &Bench<'_>, ranges: &[Range], window: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + window;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(100) {
            return Ok(());
        }
        if let Err(e) = b.update_once(ranges, Some(left)).await {
            let cancelled = e
                .downcast_ref::<sqlx::Error>()
                .and_then(|e| e.as_database_error())
                .and_then(|d| d.code())
                .is_some_and(|c| c == "57014");
            return if cancelled { Ok(()) } else { Err(e) };
        }
    }
}
