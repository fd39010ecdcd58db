//! What can go wrong while copying, named after where.

use ferry_domain::TenantId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The tables cannot be copied between as configured; nothing was written.
    #[error("cannot plan the copy: {0}")]
    Plan(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{doing}: {cause}")]
    Database {
        doing: &'static str,
        cause: sqlx::Error,
    },
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),
    /// The tenant id is not a value of the tenant column's type; nothing was read or written.
    #[error("{mismatch} (the type of {table}.{column}, {ty})")]
    TenantKey {
        mismatch: ferry_domain::TenantKeyMismatch,
        table: String,
        column: String,
        ty: String,
    },
    #[error(
        "tenant {tenant} holds rows in the target that differ from the source before the copy started ({count} rows); pass --overwrite to let the copy replace them"
    )]
    TargetConflict { tenant: TenantId, count: u64 },
}

impl CopyError {
    pub(crate) fn db(doing: &'static str, cause: sqlx::Error) -> CopyError {
        CopyError::Database { doing, cause }
    }

    /// Whether retrying later may succeed (a dropped connection, a timeout), as opposed to a
    /// mistake that retrying repeats.
    pub fn is_transient(&self) -> bool {
        match self {
            CopyError::Database { cause, .. } => {
                matches!(
                    cause,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Protocol(_)
                ) || cause
                    .as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|code| {
                        // Connection exceptions, serialization failures, deadlocks, admin
                        // shutdown, cannot-connect-now.
                        code.starts_with("08")
                            || code == "40001"
                            || code == "40P01"
                            || code.starts_with("57P")
                    })
            }
            _ => false,
        }
    }
}
