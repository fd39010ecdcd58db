#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),
    #[error("{field}: {source}")]
    Ident {
        field: &'static str,
        #[source]
        source: ferry_domain::IdError,
    },
    /// The table cannot be tiered as declared; the message names what and why.
    #[error("{0}")]
    Declaration(String),
    #[error("failed to {what}: {cause}")]
    Database {
        what: &'static str,
        #[source]
        cause: sqlx::Error,
    },
    /// A value that cannot be carried losslessly (e.g. `infinity` in a timestamp column).
    #[error("column {column}: {detail}")]
    Value { column: String, detail: String },
    #[error("cold tier {what} {path}: {cause}")]
    ObjectStore {
        what: &'static str,
        path: String,
        #[source]
        cause: object_store::Error,
    },
    #[error("segment {path}: {detail}")]
    Segment { path: String, detail: String },
    #[error("cold tier URL {url:?}: {detail}")]
    Url { url: String, detail: String },
    /// The tenant id is not a value of the tenant column's type; nothing was read or written.
    #[error("{mismatch} (the type of {column}, {ty})")]
    TenantKey {
        mismatch: ferry_domain::TenantKeyMismatch,
        column: String,
        ty: String,
    },
}

impl TierError {
    pub(crate) fn db(what: &'static str, cause: sqlx::Error) -> TierError {
        TierError::Database { what, cause }
    }

    pub(crate) fn segment(path: &object_store::path::Path, detail: impl ToString) -> TierError {
        TierError::Segment {
            path: path.to_string(),
            detail: detail.to_string(),
        }
    }
}
