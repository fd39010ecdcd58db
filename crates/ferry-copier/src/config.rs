//! The plan of a tenant move, as stored in the migration's config (JSON).

use std::time::Duration;

use ferry_domain::SqlIdent;
use serde::Deserialize;

/// A table, schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRef {
    #[serde(default = "public")]
    pub schema: String,
    pub table: String,
}

fn public() -> String {
    "public".into()
}

/// `{"source": {...}, "target": {...}, "tenant_column": "...", "version_column": "...",
/// "copy": {...}, "backpressure": {...}, "buffer": {...}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantMoveConfig {
    pub source: TableRef,
    pub target: TableRef,
    pub tenant_column: String,
    /// A column every write increases (`bigint` version or `timestamptz` updated_at): copies
    /// never overwrite a row with a newer version.
    pub version_column: String,
    #[serde(default)]
    pub copy: CopySettings,
    #[serde(default)]
    pub backpressure: BackpressureSettings,
    #[serde(default)]
    pub buffer: MoveBufferSettings,
}

/// The update buffer of a tenant move: the changes a non-authoritative side missed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoveBufferSettings {
    /// Failed attempts at applying a change before it is parked as dead. Only the change's
    /// own failures count (a statement the side refuses), not an unreachable side.
    pub dead_after: i32,
}

impl Default for MoveBufferSettings {
    fn default() -> Self {
        MoveBufferSettings { dead_after: 10 }
    }
}

pub const DEFAULT_TARGET_BATCH: Duration = Duration::from_millis(500);
pub const DEFAULT_MIN_BATCH: u64 = 500;
pub const DEFAULT_MAX_BATCH: u64 = 2_000;
pub const DEFAULT_START_BATCH: u64 = 500;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CopySettings {
    /// How long one batch should take; the batch size adapts towards it.
    pub target_batch_ms: u64,
    pub min_batch: u64,
    pub max_batch: u64,
    pub start_batch: u64,
    /// Rows per second, at most (an operator's `ferry copy throttle` overrides it).
    pub rate_limit: Option<u64>,
    /// How a batch keeps a concurrent delete from being written back (race 2 of ARCHITECTURE.md):
    /// see [`SourceLock`]. Defaults to [`SourceLock::Tenant`].
    pub source_lock: Option<SourceLock>,
    /// The older spelling: `true` is `"source_lock": "rows"`, `false` is `"none"`.
    pub lock_source_rows: Option<bool>,
}

/// How a batch keeps a delete that races it from being written back to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceLock {
    /// One shared advisory lock on the tenant per batch, held until the batch is committed;
    /// Ferry's router takes it exclusively around each delete while a copy may read that
    /// side ([`crate::tenant_lock`]). One lock per batch instead of one per row, so about a
    /// third faster than [`SourceLock::Rows`]; deletes made outside Ferry's router do not
    /// wait for it (they do not reach the destination either, and validation reports them).
    Tenant,
    /// Every source row of a batch locked `FOR SHARE` until the batch is committed: any
    /// writer's delete or update of them waits. Writes every row's lock to the heap and WAL.
    Rows,
    /// No lock: a raced delete can be written back, and the batch's validation deletes it
    /// milliseconds later, while the destination is not yet read from.
    None,
}

impl SourceLock {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceLock::Tenant => "tenant",
            SourceLock::Rows => "rows",
            SourceLock::None => "none",
        }
    }
}

impl CopySettings {
    pub fn source_lock(&self) -> SourceLock {
        match (self.source_lock, self.lock_source_rows) {
            (Some(lock), _) => lock,
            (None, Some(true)) => SourceLock::Rows,
            (None, Some(false)) => SourceLock::None,
            (None, None) => SourceLock::Tenant,
        }
    }
}

impl Default for CopySettings {
    fn default() -> Self {
        CopySettings {
            target_batch_ms: DEFAULT_TARGET_BATCH.as_millis() as u64,
            min_batch: DEFAULT_MIN_BATCH,
            max_batch: DEFAULT_MAX_BATCH,
            start_batch: DEFAULT_START_BATCH,
            rate_limit: None,
            source_lock: None,
            lock_source_rows: None,
        }
    }
}

/// Thresholds past which the copier slows down and then holds. Defaults protect a live OLTP
/// database: a probe query that normally takes well under a millisecond, a few seconds of
/// replication lag, a pool nearly exhausted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackpressureSettings {
    /// Hold while a `SELECT 1` probe on either side takes longer than this.
    pub max_probe_ms: u64,
    /// Hold while the last batch took longer than this multiple of the target batch time.
    pub max_batch_overrun: f64,
    /// Hold while replication lag exceeds this.
    pub max_replication_lag_ms: u64,
    /// Hold while more than this fraction of either server's `max_connections` are in use.
    pub max_pool_busy: f64,
    /// Where replication lag is read, on both the source and the target: a built-in source,
    /// never SQL from the config (see [`LagSource`]). Replicas reached by their own URL are
    /// given at run time (`ferry copy run --lag-replica-url`), not stored here.
    pub lag_source: LagSource,
    /// No longer read: Ferry does not run SQL from a migration's stored config. Kept only to
    /// refuse it by name.
    #[doc(hidden)]
    pub lag_query: Option<serde_json::Value>,
    /// How long to wait before re-reading the signals while holding.
    pub hold_poll_ms: u64,
    /// The pace controller (RFC 001): a probe slower than `max(baseline × latency_factor,
    /// baseline + latency_floor_ms)` halves the copy's rows/s; calm grows it back by
    /// `pace_step_rows_per_s`. The baseline is the probe latency before the first batch.
    /// 0 turns the controller off.
    pub latency_factor: f64,
    pub latency_floor_ms: u64,
    /// The controller never paces the whole copy below this.
    pub min_rows_per_s: u64,
    pub pace_step_rows_per_s: u64,
}

/// A built-in way of reading replication lag from a database the copier is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LagSource {
    /// A primary's slowest standby (`pg_stat_replication.replay_lag`); on a replica, its own
    /// replay delay.
    #[default]
    Auto,
    /// Only `pg_stat_replication` (zero on a replica or without standbys).
    Primary,
    /// Only the replay delay of a replica (zero on a primary).
    Replica,
    /// Read no lag on the source and target (replicas given by URL are still read).
    None,
}

impl Default for BackpressureSettings {
    fn default() -> Self {
        BackpressureSettings {
            max_probe_ms: 50,
            max_batch_overrun: 4.0,
            max_replication_lag_ms: 5_000,
            max_pool_busy: 0.9,
            lag_source: LagSource::Auto,
            lag_query: None,
            hold_poll_ms: 250,
            latency_factor: 1.5,
            latency_floor_ms: 1,
            min_rows_per_s: 200,
            pace_step_rows_per_s: 500,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The JSON does not fit the plan (an unknown or missing field, a wrong type); the
    /// message names the field. Not a `#[source]`: the message already says it all.
    #[error("tenant move config is not valid: {0}")]
    Json(serde_json::Error),
    #[error("tenant move config: {field}: {source}")]
    Ident {
        field: &'static str,
        #[source]
        source: ferry_domain::IdError,
    },
    #[error("tenant move config: {0}")]
    Invalid(String),
}

impl From<serde_json::Error> for ConfigError {
    fn from(e: serde_json::Error) -> Self {
        ConfigError::Json(e)
    }
}

/// The validated identifiers of a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub source_schema: SqlIdent,
    pub source_table: SqlIdent,
    pub target_schema: SqlIdent,
    pub target_table: SqlIdent,
    pub tenant_column: SqlIdent,
    pub version_column: SqlIdent,
}

impl TenantMoveConfig {
    pub fn from_json(value: &serde_json::Value) -> Result<TenantMoveConfig, ConfigError> {
        let config: TenantMoveConfig = serde_json::from_value(value.clone())?;
        config.names()?;
        let c = &config.copy;
        if c.min_batch == 0 || c.min_batch > c.max_batch {
            return Err(ConfigError::Invalid(format!(
                "copy.min_batch ({}) must be at least 1 and at most copy.max_batch ({})",
                c.min_batch, c.max_batch
            )));
        }
        if c.source_lock.is_some() && c.lock_source_rows.is_some() {
            return Err(ConfigError::Invalid(
                "copy.source_lock and copy.lock_source_rows (its older spelling) are both set; \
                 keep source_lock"
                    .into(),
            ));
        }
        if config.backpressure.lag_query.is_some() {
            return Err(ConfigError::Invalid(
                "backpressure.lag_query is no longer read: Ferry does not run SQL from a migration's \
                 stored config. Use backpressure.lag_source (\"auto\", \"primary\", \"replica\", \"none\") \
                 and watch other replicas with `ferry copy run --lag-replica-url URL`"
                    .into(),
            ));
        }
        if config.buffer.dead_after < 1 {
            return Err(ConfigError::Invalid(format!(
                "buffer.dead_after is {}; it must be at least 1",
                config.buffer.dead_after
            )));
        }
        if c.target_batch_ms == 0 {
            return Err(ConfigError::Invalid(
                "copy.target_batch_ms must be positive".into(),
            ));
        }
        Ok(config)
    }

    pub fn names(&self) -> Result<Names, ConfigError> {
        let ident = |field: &'static str, v: &str| {
            SqlIdent::new(v).map_err(|source| ConfigError::Ident { field, source })
        };
        let names = Names {
            source_schema: ident("source.schema", &self.source.schema)?,
            source_table: ident("source.table", &self.source.table)?,
            target_schema: ident("target.schema", &self.target.schema)?,
            target_table: ident("target.table", &self.target.table)?,
            tenant_column: ident("tenant_column", &self.tenant_column)?,
            version_column: ident("version_column", &self.version_column)?,
        };
        Ok(names)
    }

    pub fn target_batch(&self) -> Duration {
        Duration::from_millis(self.copy.target_batch_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(copy: serde_json::Value) -> Result<TenantMoveConfig, ConfigError> {
        TenantMoveConfig::from_json(&serde_json::json!({
            "source": {"table": "orders"}, "target": {"schema": "moved", "table": "orders"},
            "tenant_column": "tenant_id", "version_column": "version", "copy": copy,
        }))
    }

    #[test]
    fn the_tenant_lock_is_the_default_and_the_older_spelling_still_reads() {
        let lock = |copy| config(copy).map(|c| c.copy.source_lock()).unwrap();
        assert_eq!(lock(serde_json::json!({})), SourceLock::Tenant);
        assert_eq!(
            lock(serde_json::json!({"source_lock": "rows"})),
            SourceLock::Rows
        );
        assert_eq!(
            lock(serde_json::json!({"source_lock": "none"})),
            SourceLock::None
        );
        assert_eq!(
            lock(serde_json::json!({"lock_source_rows": true})),
            SourceLock::Rows
        );
        assert_eq!(
            lock(serde_json::json!({"lock_source_rows": false})),
            SourceLock::None
        );
    }

    #[test]
    fn both_spellings_at_once_or_an_unknown_lock_are_refused() {
        let both = config(serde_json::json!({"source_lock": "rows", "lock_source_rows": true}));
        assert!(both.unwrap_err().to_string().contains("both set"));
        let unknown = config(serde_json::json!({"source_lock": "table"}));
        assert!(unknown.unwrap_err().to_string().contains("unknown variant"));
    }
}
