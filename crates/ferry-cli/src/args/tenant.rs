//! `ferry tenant …` and `ferry rollout`: registering tenants and changing their phases, one
//! tenant or a cohort at a time. Both take the same change flags, so a reason, a force, a
//! dry run or an expected phase mean the same whichever way a change is asked for.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use ferry_domain::{MigrationId, Phase, TenantId};

#[derive(Debug, Subcommand)]
pub enum TenantCmd {
    /// Register tenants (in legacy) or update their row counts.
    ///
    /// Tenants are given as TENANT or TENANT=ROWS, and/or read from a file with one
    /// TENANT[,ROWS] per line ('#' starts a comment). Row counts drive smallest-first cohorts.
    Add {
        migration: MigrationId,
        /// TENANT or TENANT=ROWS.
        tenants: Vec<String>,
        /// A file of TENANT[,ROWS] lines; '-' reads standard input.
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// List tenants, optionally by phase.
    List {
        migration: MigrationId,
        #[arg(long, value_parser = parse_phase)]
        phase: Option<Phase>,
        /// Only paused tenants.
        #[arg(long)]
        paused: bool,
        /// Start after this tenant id (for paging).
        #[arg(long)]
        after: Option<TenantId>,
        #[arg(long, default_value_t = 100)]
        limit: u64,
        #[arg(long)]
        json: bool,
    },
    /// Show a tenant's phase and what its next advance is waiting for.
    Show {
        migration: MigrationId,
        tenant: TenantId,
        #[arg(long)]
        json: bool,
    },
    /// Move a tenant one phase forward.
    Advance(ChangeArgs),
    /// Walk a tenant back towards legacy, one guarded step at a time.
    ///
    /// From dual_write and shadow the step is straight to legacy. From target_primary it is to
    /// shadow (authority returns to the source while writes still reach both sides), then
    /// legacy. From target_only it is to target_primary first; the step after that waits until
    /// the reverse copy has caught the source up (`ferry copy run` does it). Each step waits for
    /// every live router to acknowledge it before the next.
    Rollback(RollbackArgs),
    /// Stop workers moving this tenant's data; routing is unchanged.
    Pause(ChangeArgs),
    /// Let workers move this tenant's data again.
    Resume(ChangeArgs),
    /// The tenant's audit log: every change, who made it, why, and which guards were forced.
    History {
        migration: MigrationId,
        tenant: TenantId,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    pub migration: MigrationId,
    pub tenant: TenantId,
    #[command(flatten)]
    pub change: ChangeFlags,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub base: ChangeArgs,
    /// Take one step back only, instead of walking back to legacy.
    #[arg(long)]
    pub one_step: bool,
}

#[derive(Debug, Args)]
pub struct ChangeFlags {
    /// Why, for the audit log. Required with --force.
    #[arg(long, default_value = "")]
    pub reason: String,
    /// Override failed guards. Each overridden guard is recorded in the audit log.
    #[arg(long)]
    pub force: bool,
    /// Check guards and report what would happen, without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Act only on tenants currently in this phase; others are refused. Makes a repeated
    /// command safe: a second `advance --from-phase shadow` does not move a tenant twice.
    #[arg(long, value_parser = parse_phase)]
    pub from_phase: Option<Phase>,
    /// Seconds to wait for every live router to acknowledge the change (exit code 4 if they
    /// have not by then; the change itself stands).
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    pub migration: MigrationId,
    #[command(flatten)]
    pub cohort: CohortArgs,
    /// What to do to each tenant of the cohort.
    #[arg(long, value_enum, default_value_t = ActionArg::Advance)]
    pub action: ActionArg,
    #[command(flatten)]
    pub change: ChangeFlags,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CohortArgs {
    /// Exactly these tenants, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tenants: Vec<TenantId>,
    /// A stable-hash percentage of the tenants, e.g. 5 or 0.5.
    #[arg(long)]
    pub percent: Option<String>,
    /// The N tenants with the fewest rows.
    #[arg(long)]
    pub smallest: Option<u64>,
    /// Every tenant of the migration.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ActionArg {
    Advance,
    Rollback,
    Pause,
    Resume,
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    s.parse()
        .map_err(|e: ferry_domain::ParsePhaseError| e.to_string())
}
