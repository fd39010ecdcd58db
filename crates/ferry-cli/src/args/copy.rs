//! `ferry copy …` and `ferry verify`: the copier's flags. Both name the data databases
//! apart from the control store, because the copier reads and writes application data while
//! the control store only keeps its plan, progress and checkpoints.

use clap::{Args, Subcommand};
use ferry_domain::{MigrationId, TenantId};

/// Where the copier reads and writes. The control store (`--database-url`) only keeps the
/// plan, progress and checkpoints.
#[derive(Debug, Args)]
pub struct DataUrls {
    /// The database holding the source table.
    #[arg(long, env = "FERRY_SOURCE_URL", hide_env_values = true)]
    pub source_url: String,
    /// The database holding the target table (default: the source database).
    #[arg(long, env = "FERRY_TARGET_URL", hide_env_values = true)]
    pub target_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CopyCmd {
    /// Do the copier's work for the migration's tenants (or the ones named), by phase:
    /// in dual_write and shadow, copy history source -> target; in target_primary after a
    /// step back from target_only, copy target -> source (the reverse sync); in complete,
    /// delete the tenant's rows from the source. Resumes from each tenant's checkpoint.
    ///
    /// Exit code 0 when every tenant it touched is done, 3 if some are paused, cancelled or
    /// waiting for routers, 1 on an error (the checkpoint is kept: run it again).
    Run {
        migration: MigrationId,
        /// Only these tenants (default: every tenant of the migration).
        #[arg(long = "tenant")]
        tenants: Vec<TenantId>,
        #[command(flatten)]
        urls: DataUrls,
        /// Create the target table (and schema) if it does not exist: LIKE the source in its
        /// database, from the source's catalogue in another (columns, types, collations,
        /// NOT NULLs, defaults, primary key; the enums and domains it needs).
        #[arg(long)]
        create_target: bool,
        /// A hot standby (of the source or the target) whose replay delay also holds the
        /// copy, beside the migration's `backpressure.lag_source`. Repeatable. Read at run
        /// time only: no replica URL is stored.
        #[arg(
            long = "lag-replica-url",
            env = "FERRY_LAG_REPLICA_URL",
            value_delimiter = ',',
            hide_env_values = true
        )]
        lag_replica_urls: Vec<String>,
        /// Let the copy replace rows that were in the target, differing from the source,
        /// before it started. Without it such rows stop the copy for that tenant.
        #[arg(long)]
        overwrite: bool,
        /// Large tenants copied at once (largest first); small tenants (one batch) overlap
        /// up to 4 per slot. The default, 2, keeps two source connections busy; 1 is
        /// gentlest, one per database core fastest on an idle database. Backpressure and the
        /// pace controller apply to all of them together.
        #[arg(long, default_value_t = ferry_copier::schedule::DEFAULT_PARALLEL)]
        parallel: usize,
    },
    /// Copy progress per tenant: rows done / estimated total, rate, throttle state.
    Status {
        migration: MigrationId,
        #[arg(long)]
        json: bool,
    },
    /// Stop copying (after the current batch); the checkpoint is kept.
    Pause(CopyScope),
    /// Undo pause and cancel.
    Resume(CopyScope),
    /// Stop copying and discard the checkpoint; a later run starts over.
    Cancel(CopyScope),
    /// Limit the copy rate, in rows per second (0 removes the limit).
    Throttle {
        #[command(flatten)]
        scope: CopyScope,
        #[arg(long)]
        rows_per_s: u64,
    },
}

#[derive(Debug, Args)]
pub struct CopyScope {
    pub migration: MigrationId,
    /// Only this tenant (default: the whole migration).
    #[arg(long)]
    pub tenant: Option<TenantId>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub migration: MigrationId,
    pub tenant: TenantId,
    #[command(flatten)]
    pub urls: DataUrls,
    #[arg(long)]
    pub json: bool,
}
