//! The records the control store reads and writes.

use chrono::{DateTime, Utc};
use ferry_domain::{Action, Guard, MigrationId, Phase, RouterId, TenantId, TenantPhase};

/// What kind of move a migration performs. Persisted by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MigrationKind {
    /// Old rows of a table to Parquet on object storage.
    Tiering,
    /// Expand–contract change of a table's shape.
    SchemaChange,
    /// One tenant's rows to another schema or database.
    TenantMove,
    /// A customer's export loaded through validation.
    Import,
}

impl MigrationKind {
    pub const ALL: [MigrationKind; 4] = [
        MigrationKind::Tiering,
        MigrationKind::SchemaChange,
        MigrationKind::TenantMove,
        MigrationKind::Import,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MigrationKind::Tiering => "tiering",
            MigrationKind::SchemaChange => "schema_change",
            MigrationKind::TenantMove => "tenant_move",
            MigrationKind::Import => "import",
        }
    }

    pub fn parse(s: &str) -> Option<MigrationKind> {
        MigrationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMigration {
    pub id: MigrationId,
    pub kind: MigrationKind,
    pub description: String,
    /// Kind-specific plan (tables, target, cutoff), as JSON; validated by the kind's crate.
    pub config: serde_json::Value,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    pub id: MigrationId,
    pub kind: MigrationKind,
    pub description: String,
    pub config: serde_json::Value,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// A tenant to register, with its size for smallest-first cohorts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSize {
    pub tenant: TenantId,
    pub rows: u64,
}

/// One tenant's row in the control store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub migration: MigrationId,
    pub tenant: TenantId,
    pub state: TenantPhase,
    /// The store-wide change counter when this tenant last changed; routers acknowledge
    /// counters, so a router has seen this tenant's phase once its counter reaches this.
    pub changed_at_version: i64,
    pub rows: u64,
    pub cohort_bucket: u32,
    /// Bumped by every change that makes copy progress stale (a rollback to `legacy`,
    /// entering or leaving `target_only`). Progress carries the epoch it was made in, and
    /// the store accepts it only while that is still the tenant's, so a copier that slept
    /// through such a change cannot resume from its old key or mark the copy complete.
    pub copy_epoch: i64,
    pub updated_at: DateTime<Utc>,
}

/// Filters for listing tenants, paginated by tenant id.
#[derive(Debug, Clone, Default)]
pub struct TenantQuery {
    pub phase: Option<Phase>,
    pub paused: Option<bool>,
    /// Only tenants whose id sorts after this one (keyset pagination).
    pub after: Option<TenantId>,
    pub limit: Option<u64>,
}

/// A change to persist: the tenant must still be at `expected_version`, or the change is a
/// conflict and is not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseChange {
    pub tenant: TenantId,
    pub action: Action,
    pub expected_version: i64,
    pub from: TenantPhase,
    pub to_phase: Phase,
    pub to_paused: bool,
    /// Guards that failed and were overridden with `--force`.
    pub forced_guards: Vec<Guard>,
    /// Re-check, inside the writing transaction, that the tenant's update buffer is empty
    /// (set for changes whose guards require it, unless that guard was forced), so a write
    /// buffered after the engine read the facts still stops the change (it is then reported
    /// as a conflict).
    pub recheck_buffer: bool,
    /// Likewise for open validation mismatches.
    pub recheck_mismatches: bool,
}

/// Who asked for a change and why; recorded with every audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditMeta {
    pub actor: String,
    pub reason: String,
}

/// What [`crate::PhaseStore::apply_changes`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppliedChanges {
    pub applied: Vec<TenantId>,
    /// Tenants whose version moved since they were read; nothing was written for them.
    pub conflicts: Vec<TenantId>,
    /// The store-wide change counter the applied changes carry (0 if nothing applied).
    pub change_version: i64,
}

/// One line of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub seq: i64,
    pub migration: MigrationId,
    pub tenant: TenantId,
    pub action: Action,
    pub from_phase: Phase,
    pub from_paused: bool,
    pub to_phase: Phase,
    pub to_paused: bool,
    pub actor: String,
    pub reason: String,
    pub forced_guards: Vec<Guard>,
    pub change_version: i64,
    pub at: DateTime<Utc>,
}

impl AuditEntry {
    pub fn forced(&self) -> bool {
        !self.forced_guards.is_empty()
    }
}

/// Tenants per phase for one migration, the core of `ferry status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseCount {
    pub migration: MigrationId,
    pub phase: Phase,
    pub tenants: u64,
    pub paused: u64,
    pub rows: u64,
}

/// A process that routes with a cached copy of the phases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterRecord {
    pub id: RouterId,
    pub description: String,
    pub seen_version: i64,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Heartbeat within the lease: counted by the acknowledgement barrier.
    pub live: bool,
}

/// Which way a copy runs: forward fills the target, reverse restores the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyDirection {
    Forward,
    Reverse,
}

impl CopyDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyDirection::Forward => "forward",
            CopyDirection::Reverse => "reverse",
        }
    }
}

/// Copy progress of one tenant in one direction, as the copier reports it after each batch.
/// It is also the copy's checkpoint: a restarted copier continues after `last_key`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillProgress {
    pub migration: MigrationId,
    pub tenant: TenantId,
    pub direction: CopyDirection,
    /// The key of the last row copied (one text value per key column), or `None` before the
    /// first batch.
    pub last_key: Option<Vec<String>>,
    pub rows_done: u64,
    /// An estimate: the source's row count when the copy started.
    pub rows_total: u64,
    pub complete: bool,
    pub batch_size: u64,
    pub rows_per_s: f64,
    /// Why the copier is slowed or holding, if it is (e.g. `replication lag 12.0s > 5.0s`).
    pub throttled: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The tenant's copy epoch this progress belongs to (see [`TenantRecord::copy_epoch`]).
    pub epoch: i64,
}

impl BackfillProgress {
    /// Progress of a copy that has not started.
    pub fn new(migration: MigrationId, tenant: TenantId, direction: CopyDirection) -> Self {
        BackfillProgress {
            migration,
            tenant,
            direction,
            last_key: None,
            rows_done: 0,
            rows_total: 0,
            complete: false,
            batch_size: 0,
            rows_per_s: 0.0,
            throttled: None,
            updated_at: None,
            epoch: 0,
        }
    }
}

/// Operator controls over the copier: per migration (`tenant: None`) or per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyControl {
    /// Stop after the current batch; the checkpoint is kept.
    pub paused: bool,
    /// Stop and forget the checkpoint; the next run starts over.
    pub cancelled: bool,
    /// Rows per second, at most.
    pub rate_limit: Option<u64>,
}

/// Which copy controls to change (`None`: leave as is), applied in one statement so two
/// operators changing different controls at once both win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ControlChange {
    pub paused: Option<bool>,
    pub cancelled: Option<bool>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<u64>>,
}

impl CopyControl {
    /// The effective control when both a migration-wide and a tenant control apply.
    pub fn merge(self, other: CopyControl) -> CopyControl {
        CopyControl {
            paused: self.paused || other.paused,
            cancelled: self.cancelled || other.cancelled,
            rate_limit: match (self.rate_limit, other.rate_limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// A cold-tier segment in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    pub id: i64,
    pub tenant: TenantId,
    /// The object's path in the cold store (built by Ferry from validated ids).
    pub path: String,
    pub rows: u64,
    /// The first and last key (JSON arrays, as the tier writes them).
    pub min_key: String,
    pub max_key: String,
    /// Hex sha-256 of the object.
    pub checksum: String,
}

/// A new segment for [`SegmentCommit`]; its id comes from `reserve_segment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSegment {
    pub id: i64,
    pub path: String,
    pub rows: u64,
    pub min_key: String,
    pub max_key: String,
    pub checksum: String,
}

/// One atomic change of a tenant's manifest: segments added, segments retired, the buffered
/// changes those segments now contain marked applied, and the archive watermark moved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SegmentCommit {
    pub add: Vec<NewSegment>,
    /// Live segments this commit replaces; if any is no longer live (another worker got
    /// there first), nothing is committed and the store answers `Conflict`.
    pub retire: Vec<i64>,
    /// Update-buffer sequence numbers now applied.
    pub applied: Vec<i64>,
    /// Every hot row older than this (RFC 3339) when the commit's archive run read them is
    /// in a live segment.
    pub archived_through: Option<String>,
    /// Changes buffered by this commit, in order: the rows an archive run read that a writer
    /// changed since. In the commit's transaction, so a crash before it leaves no change for
    /// a key it never archived (a stale one, applied after a later archive of the key).
    pub requeue: Vec<Requeue>,
}

/// A change for the update buffer, buffered by a [`SegmentCommit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeue {
    pub key: String,
    /// `upsert` or `delete`.
    pub operation: String,
    pub payload: serde_json::Value,
}

/// A change waiting in, or parked by, the update buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct BufferedUpdate {
    pub seq: i64,
    pub tenant: TenantId,
    pub key: String,
    pub operation: String,
    pub payload: serde_json::Value,
    /// `pending`, `dead` (gave up after too many attempts) or `applied`.
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub enqueued_at: DateTime<Utc>,
}

/// What an admin API token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TokenScope {
    /// Read status, tenants, history, metrics.
    Read,
    /// Everything `Read` may, plus phase changes, copy controls and buffer operations.
    Operator,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<TokenScope> {
        match s {
            "read" => Some(TokenScope::Read),
            "operator" => Some(TokenScope::Operator),
            _ => None,
        }
    }
}

/// A new admin API token. Only its SHA-256 is stored; the token itself is shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Who or what holds it; the actor of its audit entries. Letters, digits, '-', '_', '.'.
    pub name: String,
    pub scope: TokenScope,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub name: String,
    pub scope: TokenScope,
    pub sha256: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// One mutating operator call (API or CLI), as the operator log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOperation {
    pub actor: String,
    /// What was asked, e.g. `advance`, `buffer.drop`, `copy.throttle`.
    pub operation: String,
    /// What it was asked of: `migration` or `migration/tenant`, or `migration#seq`.
    pub target: String,
    /// The answer: `ok: …`, `refused: …`, `error: …`.
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    pub seq: i64,
    pub actor: String,
    pub operation: String,
    pub target: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

/// A router's cumulative count of one kind of route decision since it started.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteCount {
    pub migration: String,
    /// `read` or `write`.
    pub operation: String,
    /// The tenant's phase when the decision was taken.
    pub phase: String,
    /// Where it went, e.g. `source`, `target`, `both`, `hot`, `cold`, `buffer`.
    pub path: String,
    /// Why, e.g. `phase`, `archived`, `fallback`, `buffered`.
    pub reason: String,
    pub count: u64,
}

/// A migration's update buffer and validation, summed over its tenants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MigrationHealth {
    pub buffer_pending: u64,
    pub buffer_dead: u64,
    /// Pending changes that have failed at least once (being retried).
    pub buffer_retrying: u64,
    /// Failed attempts summed over open changes.
    pub buffer_attempts: u64,
    pub buffer_oldest_pending_at: Option<DateTime<Utc>>,
    pub mismatches_open: u64,
    pub mismatches_total: u64,
}
