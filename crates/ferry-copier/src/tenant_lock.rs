//! The tenant lock: closes race 2 of ARCHITECTURE.md (a delete raced by a batch that read the row
//! before it, then wrote it back) with one advisory lock per batch instead of a row lock per
//! row.
//!
//! A batch holds the lock shared, in the database it reads, from before its statement takes
//! its snapshot until its rows are committed in the destination. Ferry's router holds it
//! exclusively around a delete on that same side, from before the delete until both sides
//! are done. So a delete either commits before the batch's snapshot (the batch does not see
//! the row) or starts after the batch committed (and deletes the copy too). Updates need no
//! lock: the version guard settles them (race 1). Batches of one tenant share the lock, so
//! parallel copies never wait for each other.
//!
//! The key is two 32-bit hashes, of `ferry:<migration>` and of the tenant id, in PostgreSQL's
//! database-wide advisory lock space. A collision with another tenant (or with an
//! application's own advisory lock) only makes one wait for the other, never a wrong result.

use ferry_domain::{MigrationId, Phase, Side, TenantId};
use sqlx::PgConnection;

const SHARED: &str = "SELECT pg_advisory_xact_lock_shared(hashtext('ferry:' || $1), hashtext($2))";
const EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(hashtext('ferry:' || $1), hashtext($2))";

/// Whether a delete on `side`, in `phase`, must hold the lock: a copy may be reading that
/// side (the forward copy reads the source in `dual_write` and `shadow`; the reverse copy
/// reads the target in `target_primary`).
pub fn guards_deletes(phase: Phase, side: Side) -> bool {
    matches!(
        (phase, side),
        (Phase::DualWrite | Phase::Shadow, Side::Source) | (Phase::TargetPrimary, Side::Target)
    )
}

/// Takes the lock until the end of `tx`'s transaction: shared for a batch, exclusive for a
/// delete.
pub async fn take(
    tx: &mut PgConnection,
    migration: &MigrationId,
    tenant: &TenantId,
    shared: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(if shared { SHARED } else { EXCLUSIVE })
        .bind(migration.as_str())
        .bind(tenant.as_str())
        .execute(tx)
        .await
        .map(|_| ())
}
