//! Opening a store from a URL.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ferry_domain::SqlIdent;

use crate::ControlStore;
use crate::error::{Result, StoreError};
use crate::pg::PgStore;
use crate::sqlite::SqliteStore;

/// The default embedded store, relative to the working directory.
pub const DEFAULT_STORE_URL: &str = "sqlite://ferry.db";
/// The PostgreSQL schema that holds Ferry's tables unless told otherwise.
pub const DEFAULT_PG_SCHEMA: &str = "ferry";
/// How long to wait for a connection before declaring the store unreachable.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// PostgreSQL only: the schema holding Ferry's tables.
    pub pg_schema: SqlIdent,
    /// SQLite only: create the file if it does not exist.
    pub create_sqlite: bool,
    pub connect_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pg_schema: SqlIdent::new(DEFAULT_PG_SCHEMA).expect("the default schema name is valid"),
            create_sqlite: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

/// Opens the store a URL names, creating or upgrading its schema:
///
/// - `postgres://…` or `postgresql://…`: the PostgreSQL store;
/// - `sqlite://PATH`, `sqlite:PATH` or a plain file path: the embedded SQLite store.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn ControlStore>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PgStore::connect(url, &options.pg_schema, options.connect_timeout).await?;
        return Ok(Arc::new(store));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() || path.contains("://") {
        return Err(StoreError::BadUrl {
            url: crate::redact_url(url),
            why: "expected postgres://…, sqlite://PATH or a file path".into(),
        });
    }
    let store = SqliteStore::open(
        Path::new(path),
        options.create_sqlite,
        options.connect_timeout,
    )
    .await?;
    Ok(Arc::new(store))
}
