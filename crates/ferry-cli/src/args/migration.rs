//! `ferry migration …`: creating and inspecting migrations. The kind names what a migration
//! moves; its `--config` plan is parsed as JSON here, checked against the kind's plan by the
//! command, and read by the kind's worker (the copier, the archiver) when it opens the
//! migration.

use clap::{Subcommand, ValueEnum};
use ferry_domain::MigrationId;

use super::JsonFlag;

#[derive(Debug, Subcommand)]
pub enum MigrationCmd {
    /// Create a migration.
    Create {
        /// Lowercase letters, digits and '_', starting with a letter (at most 48).
        id: MigrationId,
        /// What the migration moves.
        #[arg(long, value_enum)]
        kind: KindArg,
        #[arg(long, default_value = "")]
        description: String,
        /// Kind-specific plan as JSON, or @FILE to read it from a file. A tenant-move,
        /// tiering or schema-change plan is checked before anything is stored (an error names
        /// the field, every one of a schema-change plan's as `operations[I].FIELD`); without
        /// one the migration only tracks phases.
        #[arg(long, default_value = "{}")]
        config: String,
    },
    /// List migrations.
    List(JsonFlag),
    /// Show a migration and its tenants per phase.
    Show {
        id: MigrationId,
        #[arg(long)]
        json: bool,
    },
    /// Replay the audit log and check it explains every tenant's phase (exit 1 if not).
    Verify { id: MigrationId },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// Old rows of a table to Parquet on object storage.
    Tiering,
    /// Expand–contract change of a table's shape.
    SchemaChange,
    /// One tenant's rows to another schema or database.
    TenantMove,
    /// A customer's export, validated and loaded.
    Import,
}
