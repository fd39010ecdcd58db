//! Backpressure: before each batch, read the signals that say the databases are under strain
//! and decide whether to go on or hold.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::config::{BackpressureSettings, LagSource};

/// What the copier saw before a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    pub source_probe: Duration,
    pub target_probe: Duration,
    pub last_batch: Option<Duration>,
    pub replication_lag: Option<Duration>,
    /// Connections in use / `max_connections`, on each server: a database running out of
    /// connections is one whose application is about to fail requests.
    pub source_pool_busy: f64,
    pub target_pool_busy: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Go,
    /// Hold, and why (shown to operators as the throttle state).
    Hold(String),
}

/// Decides from the signals alone; the reasons name the signal and its threshold.
pub fn judge(s: &Signals, settings: &BackpressureSettings, target_batch: Duration) -> Verdict {
    let max_probe = Duration::from_millis(settings.max_probe_ms);
    let mut reasons = Vec::new();
    if s.source_probe > max_probe {
        reasons.push(format!(
            "source latency {}ms > {}ms",
            s.source_probe.as_millis(),
            max_probe.as_millis()
        ));
    }
    if s.target_probe > max_probe {
        reasons.push(format!(
            "target latency {}ms > {}ms",
            s.target_probe.as_millis(),
            max_probe.as_millis()
        ));
    }
    if let Some(batch) = s.last_batch {
        let limit = target_batch.mul_f64(settings.max_batch_overrun);
        if batch > limit {
            reasons.push(format!(
                "last batch took {}ms > {}ms",
                batch.as_millis(),
                limit.as_millis()
            ));
        }
    }
    if let Some(lag) = s.replication_lag {
        let limit = Duration::from_millis(settings.max_replication_lag_ms);
        if lag > limit {
            reasons.push(format!(
                "replication lag {:.1}s > {:.1}s",
                lag.as_secs_f64(),
                limit.as_secs_f64()
            ));
        }
    }
    for (side, busy) in [
        ("source", s.source_pool_busy),
        ("target", s.target_pool_busy),
    ] {
        if busy > settings.max_pool_busy {
            reasons.push(format!(
                "{side} connections {:.0}% of max_connections > {:.0}%",
                busy * 100.0,
                settings.max_pool_busy * 100.0
            ));
        }
    }
    if reasons.is_empty() {
        Verdict::Go
    } else {
        Verdict::Hold(reasons.join("; "))
    }
}

/// A primary's replication lag: its slowest standby's replay lag (zero without standbys, or
/// on a replica).
const PRIMARY_LAG: &str = "SELECT CASE WHEN pg_is_in_recovery() THEN 0 \
     ELSE coalesce((SELECT max(extract(epoch FROM replay_lag)) FROM pg_stat_replication), 0) END::float8";

/// A replica's replay delay: with WAL received but not yet replayed, the age of the last
/// transaction it replayed; zero when it has replayed all it received (an idle primary is not
/// lag), and on a primary.
const REPLICA_LAG: &str = "SELECT CASE WHEN NOT pg_is_in_recovery() \
        OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 \
     ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8";

/// Reads one built-in lag source: the largest of the statements it names, in seconds. A lag
/// that cannot be read counts as too much.
async fn lag_of(pool: &PgPool, source: LagSource) -> f64 {
    let statements: &[&'static str] = match source {
        LagSource::Auto => &[PRIMARY_LAG, REPLICA_LAG],
        LagSource::Primary => &[PRIMARY_LAG],
        LagSource::Replica => &[REPLICA_LAG],
        LagSource::None => &[],
    };
    let mut worst: f64 = 0.0;
    for sql in statements {
        let seconds = sqlx::query_scalar::<_, Option<f64>>(*sql)
            .fetch_one(pool)
            .await
            .map(|s| s.unwrap_or(0.0))
            .unwrap_or(UNREACHABLE.as_secs_f64());
        worst = worst.max(seconds);
    }
    worst
}

/// What a failed probe counts as.
const UNREACHABLE: Duration = Duration::from_secs(3600);

async fn probe(pool: &PgPool) -> Result<Duration, sqlx::Error> {
    let started = Instant::now();
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(started.elapsed())
}

/// One probe's time; a failed probe counts as very slow.
pub async fn probe_time(pool: &PgPool) -> Duration {
    probe(pool).await.unwrap_or(Duration::from_secs(3600))
}

/// The time of a one-record commit: what every writing transaction of the application waits
/// for (WAL insert and flush), and what a copy's WAL volume slows first. A transactional
/// logical message writes no table; decoders ignore the `ferry` prefix. Where the function
/// is not allowed, a `SELECT 1` stands in.
pub async fn commit_time(pool: &PgPool) -> Duration {
    let started = Instant::now();
    match sqlx::query("SELECT pg_logical_emit_message(true, 'ferry', '')")
        .execute(pool)
        .await
    {
        Ok(_) => started.elapsed(),
        Err(_) => probe_time(pool).await,
    }
}

/// The server's connection saturation. (Not this copier's own pool: a copier waiting for its
/// own connections is not a database under strain.)
async fn busy(pool: &PgPool) -> Result<f64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*)::float8 / greatest(current_setting('max_connections')::float8, 1) FROM pg_stat_activity",
    )
    .fetch_one(pool)
    .await
}

/// Reads every signal. A probe that fails counts as infinitely slow: the copier holds rather
/// than pushes into a database it cannot reach.
pub async fn read(
    source: &PgPool,
    target: &PgPool,
    replicas: &[PgPool],
    settings: &BackpressureSettings,
    last_batch: Option<Duration>,
) -> Signals {
    let unreachable = UNREACHABLE;
    // Both sides (the copy reads one and writes the other, and either may have replicas
    // falling behind), by the configured source; and every replica given by URL, by its
    // replay delay.
    let mut lag: f64 = 0.0;
    for pool in [source, target] {
        lag = lag.max(lag_of(pool, settings.lag_source).await);
    }
    for replica in replicas {
        lag = lag.max(lag_of(replica, LagSource::Replica).await);
    }
    let lag = Some(lag);
    Signals {
        source_probe: probe(source).await.unwrap_or(unreachable),
        target_probe: probe(target).await.unwrap_or(unreachable),
        last_batch,
        replication_lag: lag.map(|s| Duration::from_secs_f64(s.max(0.0))),
        source_pool_busy: busy(source).await.unwrap_or(1.0),
        target_pool_busy: busy(target).await.unwrap_or(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calm() -> Signals {
        Signals {
            source_probe: Duration::from_millis(1),
            target_probe: Duration::from_millis(1),
            last_batch: Some(Duration::from_millis(400)),
            replication_lag: Some(Duration::ZERO),
            source_pool_busy: 0.2,
            target_pool_busy: 0.1,
        }
    }

    #[test]
    fn calm_databases_go() {
        let v = judge(
            &calm(),
            &BackpressureSettings::default(),
            Duration::from_millis(500),
        );
        assert_eq!(v, Verdict::Go);
    }

    #[test]
    fn each_signal_holds_and_says_why() {
        let settings = BackpressureSettings::default();
        let target = Duration::from_millis(500);
        let cases = [
            (
                Signals {
                    replication_lag: Some(Duration::from_secs(12)),
                    ..calm()
                },
                "replication lag 12.0s > 5.0s",
            ),
            (
                Signals {
                    source_probe: Duration::from_millis(80),
                    ..calm()
                },
                "source latency 80ms > 50ms",
            ),
            (
                Signals {
                    last_batch: Some(Duration::from_secs(3)),
                    ..calm()
                },
                "last batch took 3000ms > 2000ms",
            ),
            (
                Signals {
                    target_pool_busy: 0.95,
                    ..calm()
                },
                "target connections 95% of max_connections > 90%",
            ),
        ];
        for (signals, why) in cases {
            assert_eq!(
                judge(&signals, &settings, target),
                Verdict::Hold(why.into())
            );
        }
    }
}
