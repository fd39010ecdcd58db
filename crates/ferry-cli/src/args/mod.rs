//! Command-line flags, as parsed: validation only, no I/O. `context.rs` turns them into
//! open stores. The doc comments here are the `--help` text.
//!
//! The global flags and the command list live here, with the few flags of `status`,
//! `routers` and `demo`; every other noun's flags have a module of their own.

mod bench;
mod copy;
mod migration;
mod schema;
mod serve;
mod tenant;
mod tier;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ferry_domain::MigrationId;

pub use bench::{BenchCmd, ControlStoreBench, CopyBench, TierBench};
pub use copy::{CopyCmd, CopyScope, DataUrls, VerifyArgs};
pub use migration::{KindArg, MigrationCmd};
pub use schema::{AppUrl, SchemaCmd};
pub use serve::{ScopeArg, ServeArgs, TokenCmd};
pub use tenant::{ActionArg, ChangeArgs, ChangeFlags, RollbackArgs, RolloutArgs, TenantCmd};
pub use tier::{BufferCmd, TierCmd};

/// Ferry moves a live multi-tenant backend's data, one tenant at a time, through explicit
/// phases: legacy -> dual_write -> shadow -> target_primary -> target_only -> complete.
///
/// Every phase change is guarded (backfill complete, no unresolved mismatches, update buffer
/// drained, every live router caught up), recorded in an audit log, and reversible until the
/// source is retired.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, max_term_width = 100, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Start with `ferry demo` to watch a thousand tenants move on a throwaway store. Then:

  ferry migration create orders_move --kind tenant-move
  ferry tenant add orders_move acme=120000 globex=800
  ferry rollout orders_move --percent 5 --reason canary --dry-run
  ferry rollout orders_move --percent 5 --reason canary
  ferry tenant show orders_move acme
  ferry status

Exit codes: 0 ok, 1 error, 2 usage, 3 refused by guards, 4 not yet acknowledged by routers,
5 anomalies found by `ferry check`.";

#[derive(Debug, Args)]
pub struct Global {
    /// The control store: postgres://USER@HOST/DB for production, or sqlite://PATH (or a
    /// plain path) for the embedded store.
    #[arg(
        long,
        global = true,
        env = "FERRY_DATABASE_URL",
        default_value = ferry_store::DEFAULT_STORE_URL,
        hide_env_values = true
    )]
    pub database_url: String,

    /// PostgreSQL schema holding Ferry's tables (ignored for SQLite).
    #[arg(long, global = true, env = "FERRY_STORE_SCHEMA", default_value = ferry_store::DEFAULT_PG_SCHEMA)]
    pub store_schema: String,

    /// Who is acting, for the audit log. Defaults to $USER@$HOSTNAME.
    #[arg(long, global = true, env = "FERRY_ACTOR")]
    pub actor: Option<String>,

    /// Log more: -v info (phase changes, batch summaries), -vv debug (every route decision),
    /// -vvv trace. RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Logs as JSON lines on stderr.
    #[arg(long, global = true)]
    pub log_json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list and inspect migrations.
    #[command(subcommand)]
    Migration(MigrationCmd),
    /// Register tenants and move one tenant at a time.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Move a whole cohort one step, each tenant with its own guards.
    ///
    /// Pick the cohort with exactly one of --tenants, --percent, --smallest or --all.
    /// Percent cohorts are stable: the same tenants every time for a migration, and a 10%
    /// cohort is always inside the 20% one. Tenants whose guards fail are listed with the
    /// reason and left where they are; the exit code is 3 if any were refused.
    Rollout(RolloutArgs),
    /// Tenants per phase for every migration, and the routers following them.
    Status(StatusArgs),
    /// Routers registered for the acknowledgement barrier, and what they have seen.
    Routers(JsonFlag),
    /// Run and steer the copier of a tenant_move migration.
    #[command(subcommand)]
    Copy(CopyCmd),
    /// Re-check one tenant, source against target, end to end (read-only); resolves its
    /// recorded mismatches if everything matches. Exit code 3 if anything differs.
    Verify(VerifyArgs),
    /// Run and inspect the archiver of a tiering migration (old rows to Parquet segments).
    #[command(subcommand)]
    Tier(TierCmd),
    /// The update buffer: changes to archived rows waiting to be applied to their segments.
    #[command(subcommand)]
    Buffer(BufferCmd),
    /// Run an expand–contract schema change from its plan: validate, plan, start, backfill,
    /// complete, rollback, status.
    ///
    /// The plan is the migration's --config (see docs/schema-changes.md). `start` builds the
    /// new shape beside the old and a version schema of views showing it; each tenant is
    /// backfilled in dual_write, reads the new shape from target_primary on, and `complete`
    /// drops the old shape once every tenant is at target_only. Every step holds its locks
    /// for at most lock_timeout_ms, and every command can be run again after a crash.
    ///
    /// Exit codes: 0 done, 1 error (run it again once fixed), 3 refused (nothing changed: the
    /// message says what must happen first).
    #[command(subcommand)]
    Schema(SchemaCmd),
    /// Serve the admin HTTP API (/api/v1), Prometheus metrics (/metrics) and the live
    /// dashboard (/) over the control store.
    ///
    /// Every API route and /metrics needs `Authorization: Bearer TOKEN`: a `read` token for
    /// GET, an `operator` token for actions. Create tokens with `ferry token create`. Open
    /// the dashboard at http://ADDR/ and paste a token, or at http://ADDR/#token=TOKEN.
    Serve(ServeArgs),
    /// Admin API tokens: create (shown once, stored hashed), list, revoke.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Run the end-to-end demo: real rows moved under live traffic, nothing to set up.
    ///
    /// Starts a throwaway PostgreSQL (initdb/pg_ctl from Debian's `postgresql` package) unless
    /// --data-url is given, keeps the control store on a fresh embedded SQLite file, fills a
    /// table of tenants of skewed sizes, and moves a canary cohort and then everyone through
    /// every phase with real copies, a pause, rollbacks and a reverse copy, while 8 clients
    /// write through two routers. Ends with the history checker's anomaly counts and the
    /// operations per path, and verifies the audit log; exits non-zero on any anomaly or
    /// inconsistency. --simulate runs the phase story alone on a thousand tenants.
    Demo(DemoArgs),
    /// Prove Ferry on your own staging database: concurrent clients write through routed
    /// tables while tenants move, roll back and copy, then every key is checked.
    ///
    /// Creates a scratch table in schema ferry_check_<pid> of --data-url (dropped afterwards
    /// unless --keep) and uses a throwaway embedded control store, so nothing of yours is
    /// touched. Prints each anomaly kind's count (lost, duplicated, resurrected, stale_read,
    /// version_regression, cross_tenant, corrupted); all zero is the pass. Exit code 5 if any
    /// anomaly was found.
    Check(CheckArgs),
    /// Benchmarks; each prints figures and ratios against a baseline measured in the same run.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this migration.
    #[arg(long)]
    pub migration: Option<MigrationId>,
    /// The same object `GET /api/v1/status` answers.
    #[arg(long)]
    pub json: bool,
    /// Redraw every SECS seconds (default 2) until Ctrl-C; with --json, one object per line.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run in this PostgreSQL database (scratch schema ferry_demo_<pid>, dropped afterwards)
    /// instead of a throwaway cluster started with initdb/pg_ctl.
    #[arg(
        long,
        env = "FERRY_DEMO_DATA_URL",
        hide_env_values = true,
        conflicts_with = "simulate"
    )]
    pub data_url: Option<String>,
    /// A shorter run (fewer tenants, rows and clients): about half a minute.
    #[arg(long, conflicts_with = "simulate")]
    pub quick: bool,
    /// The phase story alone, with no database: a thousand tenants through every phase, the
    /// backfills recorded rather than copied, the traffic simulated route decisions.
    #[arg(long)]
    pub simulate: bool,
    /// How many tenants to move (default 40, 16 with --quick, 1000 with --simulate).
    #[arg(long)]
    pub tenants: Option<usize>,
    /// Keep the demo's store at this path (default: a temp directory, removed afterwards).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Seed for the tenant sizes, for a repeatable run.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also serve the admin API, metrics and dashboard over the demo's store at this address
    /// (e.g. 127.0.0.1:7070); the URL, with a fresh operator token, is printed at the start.
    #[arg(long)]
    pub serve: Option<std::net::SocketAddr>,
    /// Pause after every step, to watch the dashboard move.
    #[arg(long, default_value_t = 0)]
    pub step_delay_ms: u64,
    /// With --serve: keep serving this many seconds after the demo ends.
    #[arg(long, default_value_t = 0, requires = "serve")]
    pub linger: u64,
    /// Print one JSON object at the end: {"rows_moved", "anomalies", "operations", …}.
    #[arg(long, conflicts_with = "simulate")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The PostgreSQL database to run in (a staging copy of production is the point):
    /// postgres://USER@HOST/DB. Needs CREATE on the database.
    #[arg(long, env = "FERRY_CHECK_DATA_URL", hide_env_values = true)]
    pub data_url: String,
    /// Concurrent clients writing through the routed tables.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub clients: u32,
    /// Tenants in the scratch table.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(2..=10_000))]
    pub tenants: u64,
    /// Of them, how many move through the phases (30% is what the CI tier runs).
    #[arg(long, default_value_t = 15)]
    pub moving: u64,
    /// Routers (application processes, in-process here), one phase apart while changes land.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub routers: u64,
    /// How long the workload runs, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration: u64,
    /// Keys each client owns under each tenant.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub keys_per_tenant: u32,
    /// Keep the scratch schemas afterwards, to look at the rows.
    #[arg(long)]
    pub keep: bool,
    /// Print one JSON object at the end instead of the table.
    #[arg(long)]
    pub json: bool,
}
