//! A live load beside a copy or a backfill: pgbench's transactions per second (flat out, or
//! at a fixed rate with its latency percentiles) alone and beside the work measured, in a
//! scratch database of the same server.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context as _;
use sqlx::{AssertSqlSafe, PgPool};

/// The `pgbench` on PATH, or the newest under /usr/lib/postgresql/*/bin.
pub fn find_pgbench() -> Option<PathBuf> {
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            if dir.join("pgbench").is_file() {
                return Some(dir.join("pgbench"));
            }
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin/pgbench");
            bin.is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// A scratch pgbench database, dropped by [`LiveLoad::drop_database`].
pub struct LiveLoad {
    pgbench: PathBuf,
    admin: PgPool,
    name: String,
    url: String,
    seconds: u64,
}

impl LiveLoad {
    pub async fn create(
        admin: &PgPool,
        server_url: &str,
        seconds: u64,
    ) -> anyhow::Result<LiveLoad> {
        let pgbench =
            find_pgbench().context("find pgbench (install the PostgreSQL client tools)")?;
        let name = format!("ferry_bench_load_{}", std::process::id());
        // The name is built from a number: safe to splice.
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(admin)
            .await
            .context("create the live-load database")?;
        let url = ferry_store::url_with_database(server_url, &name);
        let load = LiveLoad {
            pgbench,
            admin: admin.clone(),
            name,
            url,
            seconds,
        };
        let out = tokio::process::Command::new(&load.pgbench)
            .args(["-i", "-q", "-s", "10", &load.url])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .await
            .context("run pgbench -i")?;
        anyhow::ensure!(
            out.status.success(),
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(load)
    }

    /// Runs pgbench (TPC-B-like, 4 clients) for the configured time; transactions per second.
    pub async fn run(&self) -> anyhow::Result<f64> {
        // One second more than measured: the first second (connections, warm-up, and the
        // copy beside it getting going) is left out of the figure.
        let out = tokio::process::Command::new(&self.pgbench)
            .args([
                "-n",
                "-c",
                "4",
                "-j",
                "2",
                "-P",
                "1",
                "-T",
                &(self.seconds + 1).to_string(),
                &self.url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .context("run pgbench")?;
        anyhow::ensure!(
            out.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        per_second_tps(&String::from_utf8_lossy(&out.stderr))
            .context("read pgbench's per-second progress")
    }

    /// Runs pgbench at a fixed `rate` (transactions per second over all clients, `-R`) for
    /// the configured time, logging every transaction: the tps it kept and its latency
    /// percentiles. With `-R` a transaction's latency counts from its scheduled start, so a
    /// stall shows in every transaction it delays, not only in the one it hit.
    pub async fn run_at(&self, rate: f64) -> anyhow::Result<RateSample> {
        let dir = std::env::temp_dir().join(format!(
            "ferry-pgbench-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let result = self.run_logged(rate, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    async fn run_logged(&self, rate: f64, dir: &std::path::Path) -> anyhow::Result<RateSample> {
        let prefix = dir.join("log");
        let out = tokio::process::Command::new(&self.pgbench)
            // No `-n`: pgbench vacuums its small tables first, so runs late in a bench do
            // not find them bloated by the runs before (autovacuum may be off).
            .args(["-c", "4", "-j", "2", "-P", "1", "-l"])
            .arg(format!("--log-prefix={}", prefix.display()))
            .args(["-R", &format!("{:.0}", rate.max(1.0))])
            .args(["-T", &(self.seconds + 1).to_string(), &self.url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .context("run pgbench -R")?;
        anyhow::ensure!(
            out.status.success(),
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tps = per_second_tps(&String::from_utf8_lossy(&out.stderr))
            .context("read pgbench's per-second progress")?;
        let mut log = String::new();
        for entry in std::fs::read_dir(dir)? {
            log.push_str(&std::fs::read_to_string(entry?.path())?);
        }
        let mut latencies = latencies_after_first_second(&log);
        anyhow::ensure!(!latencies.is_empty(), "pgbench logged no transactions");
        latencies.sort_by(f64::total_cmp);
        let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
        Ok(RateSample {
            tps,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        })
    }

    pub async fn drop_database(self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = sqlx::query(AssertSqlSafe(sql)).execute(&self.admin).await;
    }
}

/// One fixed-rate pgbench run: transactions per second kept and latency in milliseconds
/// (from each transaction's scheduled start), the first second left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSample {
    pub tps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Latencies (ms) from pgbench's per-transaction log (`client tx latency_us script epoch_s
/// us …`) of the transactions that ended after the run's first second.
fn latencies_after_first_second(log: &str) -> Vec<f64> {
    let rows: Vec<(f64, f64)> = log
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let latency: f64 = f.get(2)?.parse().ok()?;
            let s: f64 = f.get(4)?.parse().ok()?;
            let us: f64 = f.get(5)?.parse().ok()?;
            Some((s + us / 1e6, latency / 1000.0))
        })
        .collect();
    let Some(first) = rows.iter().map(|r| r.0).min_by(f64::total_cmp) else {
        return Vec::new();
    };
    rows.into_iter()
        .filter(|(end, _)| *end >= first + 1.0)
        .map(|(_, ms)| ms)
        .collect()
}

/// The mean of pgbench's `progress: T s, X tps, …` lines after the first second.
fn per_second_tps(progress: &str) -> Option<f64> {
    let tps: Vec<f64> = progress
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("progress: ")?;
            let (at, rest) = rest.split_once(" s, ")?;
            let at: f64 = at.trim().parse().ok()?;
            let tps: f64 = rest.split_whitespace().next()?.parse().ok()?;
            (at > 1.5).then_some(tps)
        })
        .collect();
    (!tps.is_empty()).then(|| tps.iter().sum::<f64>() / tps.len() as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_first_second_is_left_out() {
        let progress = "progress: 1.0 s, 100.0 tps, lat 1.0 ms stddev 0.1\n\
                        progress: 2.0 s, 2000.0 tps, lat 1.0 ms stddev 0.1\n\
                        progress: 3.0 s, 3000.0 tps, lat 1.0 ms stddev 0.1\n";
        assert_eq!(super::per_second_tps(progress), Some(2500.0));
        assert_eq!(super::per_second_tps("nothing"), None);
    }

    #[test]
    fn latencies_come_from_the_log_after_its_first_second() {
        let log = "0 0 900 0 1700000000 100000 10\n\
                   1 0 2500 0 1700000001 200000 0\n\
                   0 1 1500 0 1700000001 150000 0\n";
        assert_eq!(super::latencies_after_first_second(log), vec![2.5, 1.5]);
        assert!(super::latencies_after_first_second("").is_empty());
    }
}
