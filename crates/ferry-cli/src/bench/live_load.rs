//! A live load beside a copy: pgbench's transactions per second with no copy running, during
//! an unthrottled copy, and during Ferry's copy, in a scratch database of the same server.

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

    pub async fn drop_database(self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = sqlx::query(AssertSqlSafe(sql)).execute(&self.admin).await;
    }
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
}
