//! `ferry bench …`: each bench's flags. A bench that needs PostgreSQL takes it from
//! `--postgres-url` or `DATABASE_URL` (the variable the tests use) and works in a scratch
//! schema of its own, so it can run against the tests' server.

use clap::{Args, Subcommand};

#[derive(Debug, Subcommand)]
pub enum BenchCmd {
    /// Cached phase lookups, a 10% rollout and `status` over many tenants, on SQLite and
    /// (with --postgres-url or DATABASE_URL) PostgreSQL.
    ControlStore(ControlStoreBench),
    /// The copier's rows/s (checkpoints and validation on) against one INSERT … SELECT of the
    /// same rows (the ceiling) and a naive loop of 1,000-row keyset batches, on a generated
    /// table of skewed tenants, in a scratch schema of the given PostgreSQL database.
    Copy(CopyBench),
    /// `ferry schema`'s backfill of a new column (`up` from an old one) against the UPDATE
    /// that does the same work at once (the ceiling, on as many connections and on one), on
    /// a generated table of skewed tenants; with --live-load, what a fixed-rate pgbench load
    /// keeps of its tps and p99 latency meanwhile. In a scratch schema of the given database.
    Schema(crate::bench::SchemaBench),
    /// Archiving to Parquet against `COPY (SELECT …) TO` a file of the same rows (the export
    /// ceiling); Parquet bytes against the rows' `pg_total_relation_size`; cold against hot
    /// point reads; a TieredTable read in legacy against a direct query; buffered updates
    /// applied per second. In a scratch schema of the given PostgreSQL database.
    Tier(TierBench),
}

#[derive(Debug, Clone, Args)]
pub struct TierBench {
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    /// Tenants the rows are spread over (equally); archived two at a time.
    #[arg(long, default_value_t = 20)]
    pub tenants: u64,
    /// Point reads sampled for each latency figure.
    #[arg(long, default_value_t = 2_000)]
    pub samples: u64,
    /// Buffered updates applied in the last measurement.
    #[arg(long, default_value_t = 10_000)]
    pub updates: u64,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub postgres_url: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CopyBench {
    #[arg(long, default_value_t = 2_000_000)]
    pub rows: u64,
    #[arg(long, default_value_t = 1_000)]
    pub tenants: u64,
    /// Tenants copied at once, as `ferry copy run --parallel` (the same default). One per
    /// core the server can give: more only queue behind each other (measured: 2 on 2 cores
    /// beats 4 by 15%).
    #[arg(long, default_value_t = ferry_copier::schedule::DEFAULT_PARALLEL)]
    pub parallel: usize,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub postgres_url: String,
    /// Also measure a live load (pgbench, in a scratch database of the same server) with no
    /// copy, during an unthrottled copy, and during Ferry's copy; needs `pgbench` and a role
    /// that may create databases.
    #[arg(long)]
    pub live_load: bool,
    /// Seconds each live-load measurement runs.
    #[arg(long, default_value_t = 10)]
    pub live_seconds: u64,
    /// The pace controller's `latency_factor` for the live-load copy (default: the config's
    /// default), to see what a stricter or looser pace keeps of the load and copies meanwhile.
    #[arg(long)]
    pub live_latency_factor: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ControlStoreBench {
    #[arg(long, default_value_t = 1_000_000)]
    pub tenants: usize,
    /// PostgreSQL to measure on; the bench works in a schema of its own and drops it.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// Print one JSON object: {"bench": ..., "figures": {...}, "ratios": {...}}.
    #[arg(long)]
    pub json: bool,
}
