//! `ferry tier …` and `ferry buffer …`: the archiver's flags and the update buffer's. The
//! cutoff is given as an age or an instant; an age moves with the clock on every pass of
//! `--follow`, which is why it is kept as a duration rather than resolved here.

use clap::Subcommand;
use ferry_domain::{MigrationId, TenantId};

#[derive(Debug, Subcommand)]
pub enum TierCmd {
    /// Do the tiering work for the migration's tenants (or the ones named), by phase: archive
    /// rows older than the cutoff (from dual_write on; paused while a tenant's update buffer
    /// is over its thresholds), apply the update buffer, delete hot copies of archived rows
    /// (target_only, complete), restore them after a step back from target_only
    /// (target_primary), and collect replaced segments.
    ///
    /// Every step is idempotent: after a crash, run it again.
    Run {
        migration: MigrationId,
        /// Only these tenants (repeatable).
        #[arg(long = "tenant")]
        tenants: Vec<TenantId>,
        /// The database holding the hot table.
        #[arg(long, env = "FERRY_HOT_URL", hide_env_values = true)]
        hot_url: String,
        /// Archive rows whose age column is older than this: e.g. 90d, 12h, 30m.
        #[arg(long, value_parser = parse_age, conflicts_with = "cutoff")]
        older_than: Option<std::time::Duration>,
        /// Archive rows whose age column is before this instant (RFC 3339).
        #[arg(long)]
        cutoff: Option<String>,
        /// Hot rows deleted per statement in target_only.
        #[arg(long, default_value_t = 1000)]
        delete_batch: usize,
        /// Keep working: a pass over the tenants every --interval (with --older-than, the
        /// cutoff moves with the clock), a tenant that failed waiting longer each time
        /// (exponential backoff with jitter, up to 5 minutes). Stop with Ctrl-C.
        #[arg(long)]
        follow: bool,
        /// Seconds between passes with --follow.
        #[arg(long, default_value_t = 10, requires = "follow")]
        interval: u64,
    },
    /// Per tenant: phase, live segments, archived rows, watermark, buffer depth.
    Status {
        migration: MigrationId,
        #[arg(long)]
        json: bool,
    },
}

/// `90d`, `12h`, `30m`, `45s`.
pub fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit, e.g. 90d"))?;
    let seconds = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("{s:?}: the unit must be d, h, m or s")),
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(seconds)))
}

#[derive(Debug, Subcommand)]
pub enum BufferCmd {
    /// Pending and dead changes, oldest first, with their attempts and last error.
    List {
        migration: MigrationId,
        #[arg(long)]
        json: bool,
    },
    /// Put a dead change back in the queue (its attempts reset).
    Retry { migration: MigrationId, seq: i64 },
    /// Apply a tenant move's update buffer: the changes a side missed when its half of a
    /// write failed (tiering's buffer is applied by `ferry tier run`). Each key's changes are
    /// applied in order under the lock the routers' writes hold, version-guarded. A change
    /// whose statement fails counts an attempt (dead after the config's buffer.dead_after);
    /// an unreachable side counts nothing and is tried again. `ferry copy run` does one pass
    /// too.
    ///
    /// Example: ferry buffer apply orders_move --source-url $SRC --target-url $DST --follow
    Apply {
        migration: MigrationId,
        /// Only these tenants (repeatable).
        #[arg(long = "tenant")]
        tenants: Vec<TenantId>,
        #[command(flatten)]
        urls: crate::args::DataUrls,
        /// Keep applying, a pass every --interval seconds, until interrupted.
        #[arg(long)]
        follow: bool,
        /// Seconds between passes with --follow.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        #[arg(long)]
        json: bool,
    },
    /// Give up on a change: it is never applied. The actor and reason stay on it.
    Drop {
        migration: MigrationId,
        seq: i64,
        #[arg(long)]
        reason: String,
    },
}
