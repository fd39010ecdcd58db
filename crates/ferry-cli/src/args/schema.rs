//! `ferry schema …`: an expand–contract schema change, run from its plan (the migration's
//! `--config`). Every subcommand names the application's database apart from the control
//! store: the plan's tables, the version schema and the change's own state
//! (`ferry_schema.migrations`, `ferry_schema.steps`) live there, beside the data they change,
//! so the state and the DDL commit together.

use clap::{Args, Subcommand};
use ferry_domain::{MigrationId, TenantId};

/// The application's database.
#[derive(Debug, Args)]
pub struct AppUrl {
    /// The application's database: the one holding the tables the plan changes. Ferry keeps
    /// the change's state there too (schema ferry_schema). Not the control store
    /// (--database-url), which keeps the plan, the tenants' phases and the backfill's progress.
    #[arg(long, env = "FERRY_SOURCE_URL", hide_env_values = true)]
    pub source_url: String,
}

#[derive(Debug, Subcommand)]
pub enum SchemaCmd {
    /// Check the plan against the database without changing anything: every operation's
    /// fields, names (too long, needing quoting, taken), tables and columns that must exist,
    /// and operations that conflict. Prints `valid: N operations`, or every problem on its
    /// own line as `operations[I].FIELD: why` (exit code 1).
    ///
    /// Safe at any time. Before `start` the plan is checked against the live catalogue; after
    /// it, against the catalogue `start` recorded (the live one holds the expanded shape).
    Validate {
        /// The schema-change migration; its --config is the plan.
        migration: MigrationId,
        #[command(flatten)]
        url: AppUrl,
    },
    /// Print the exact SQL of `start`, `complete` and `rollback`, step by step, and what the
    /// backfill writes per tenant. Runs nothing: safe at any time.
    Plan {
        /// The schema-change migration; its --config is the plan.
        migration: MigrationId,
        #[command(flatten)]
        url: AppUrl,
    },
    /// Expand: build the new shape beside the old one (new columns, constraints NOT VALID,
    /// indexes built concurrently), the version schema of views showing the new shape, and
    /// the triggers keeping both shapes in step. The old version keeps working unchanged.
    ///
    /// Safe while the application runs: each DDL step waits at most the plan's
    /// lock_timeout_ms for its lock, so writers never queue behind it for longer, and is
    /// retried (ddl_attempts) with backoff. Refused while a tenant is past legacy and the
    /// change is not started (roll them back first: their backfill would count as done).
    /// Interrupted (killed, lock timeouts), run it again: steps done are never repeated.
    /// Prints the search_path that selects the new version.
    Start {
        /// The schema-change migration; its --config is the plan.
        migration: MigrationId,
        #[command(flatten)]
        url: AppUrl,
    },
    /// Backfill each tenant's history: `up(old)` written into the new columns in keyset
    /// batches on the table's primary key, paced by the plan's `backfill` and `backpressure`
    /// settings, checkpointed in the control store (`ferry copy pause/resume/cancel/throttle`
    /// steer it; `ferry schema status` and `ferry copy status` show it).
    ///
    /// Works on tenants in dual_write and shadow; in target_primary (back from target_only)
    /// it records the reverse sync done at once (the triggers kept the old shape in step).
    /// Other phases are skipped. Resumes from each tenant's checkpoint: after a crash, run it
    /// again. Exit code 0 when every tenant it touched is done, 3 if some were paused or
    /// cancelled, 1 on an error (a batch whose rows do not hold up(old) stops its tenant).
    Backfill {
        /// The schema-change migration; its --config is the plan.
        migration: MigrationId,
        /// Only these tenants (repeatable; default: every tenant of the migration).
        #[arg(long = "tenant")]
        tenants: Vec<TenantId>,
        #[command(flatten)]
        url: AppUrl,
        /// Keep going: a pass over the tenants every --interval seconds (tenants advanced
        /// into dual_write meanwhile are picked up), until interrupted.
        #[arg(long)]
        follow: bool,
        /// Seconds between passes with --follow.
        #[arg(long, default_value_t = 10, requires = "follow",
              value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        /// Tenants backfilled at once, each on its own connection; backpressure holds them
        /// all. 1 is gentlest; one per database core is fastest on an idle database.
        #[arg(long, default_value_t = ferry_copier::schedule::DEFAULT_PARALLEL,
              value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..64))]
        parallel: usize,
    },
    /// Contract: drop the old shape (old columns, the version schema, the triggers), rename
    /// the new columns into place, validate constraints; then advance every tenant at
    /// target_only to complete through the phase engine.
    ///
    /// Refused (exit code 3) unless every tenant is at target_only (or complete): a tenant
    /// still reading the old shape would break. --force --reason TEXT overrides that, recorded
    /// in the operator log. Also refused if a row was never backfilled. Killed, run it again.
    /// Not reversible once its contract step committed.
    Complete {
        /// The schema-change migration; its --config is the plan.
        migration: MigrationId,
        #[command(flatten)]
        url: AppUrl,
        /// Contract although some tenants are not at target_only: they lose the old shape,
        /// and the history of a tenant never backfilled keeps NULL in nullable columns the
        /// plan rewrote. For tenants with no rows. Needs --reason.
        #[arg(long)]
        force: bool,
        /// Why, for the operator log. Required with --force.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Undo `start` exactly: drop the version schema, the triggers, and whatever start
    /// built. The old shape was never changed, so nothing of the application's is lost.
    ///
    /// Refused (exit code 3) while a tenant is at target_primary or later: those read the new
    /// shape. Roll them back first (`ferry tenant rollback`, `ferry rollout --action
    /// rollback`). Killed, run it again. Impossible after `complete`'s contract.
    Rollback {
        /// The schema-change migration; its --config is the plan.
        migration: MigrationId,
        #[command(flatten)]
        url: AppUrl,
    },
    /// Where the change stands: its state in the application's database, the version schema,
    /// tenants per phase, and each tenant's backfill (rows done / total, rate, what holds it).
    Status {
        /// The schema-change migration; its --config is the plan.
        migration: MigrationId,
        #[command(flatten)]
        url: AppUrl,
        #[arg(long)]
        json: bool,
    },
}
