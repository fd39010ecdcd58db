//! Waiting out the writes that were in flight when validation first looked.
//!
//! A range that differs on a first look may only be caught mid-write: a writer that commits
//! the destination before the source leaves a row "only in the destination" until its source
//! COMMIT lands, however long that takes. Instead of a fixed pause, validation notes the
//! snapshot (`txid_current_snapshot()`) of the source, and of the destination when it is
//! another database, right after its first look and, before looking again or repairing, waits
//! until every transaction those snapshots saw in progress has ended. Whatever the second look
//! then finds only in the destination has no write still coming; if some transaction is still
//! in progress after the limit, nothing is deleted.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::error::CopyError;

/// How long validation waits for the transactions in flight at its first look.
pub(crate) const IN_FLIGHT_LIMIT: Duration = Duration::from_secs(30);

const POLL: Duration = Duration::from_millis(10);

/// The transactions in progress on a database at one moment, by txid.
#[derive(Debug, Clone)]
pub(crate) struct InFlight(Vec<i64>);

/// A snapshot lists as running only the txids below its `xmax`, which is one past the latest
/// *completed* transaction: the newest writes, those with txids at or past it, are running
/// but not listed (a delete whose source half committed and whose destination half was still
/// open was missed so). So the txids from `xmax` up to one just assigned here are checked one
/// by one as well.
const IN_PROGRESS_NOW: &str = "
    WITH s AS (SELECT txid_current_snapshot() AS snap, txid_current() AS mine)
    SELECT coalesce(array_agg(x), '{}') FROM (
        SELECT txid_snapshot_xip(snap) AS x FROM s
        UNION
        SELECT generate_series(txid_snapshot_xmax(snap), mine - 1) FROM s
    ) running
    WHERE txid_status(x) = 'in progress'";

impl InFlight {
    /// Notes what is in progress on `pool` now. (It assigns itself a txid to know how far
    /// txids have gone: one per validation look.)
    pub(crate) async fn now(pool: &PgPool) -> Result<InFlight, CopyError> {
        sqlx::query_scalar(IN_PROGRESS_NOW)
            .fetch_one(pool)
            .await
            .map(InFlight)
            .map_err(|e| CopyError::db("note the transactions in flight", e))
    }

    /// Waits until every transaction in progress at [`InFlight::now`] has committed or
    /// aborted; `false` if some are still in progress after `limit`.
    pub(crate) async fn settled(&self, pool: &PgPool, limit: Duration) -> Result<bool, CopyError> {
        let deadline = Instant::now() + limit;
        loop {
            let running: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM unnest($1::bigint[]) AS x
                 WHERE txid_status(x) = 'in progress'",
            )
            .bind(&self.0)
            .fetch_one(pool)
            .await
            .map_err(|e| CopyError::db("wait for the transactions in flight", e))?;
            if running == 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Waits until every transaction in progress now on each of `pools` has ended (all noted
/// first, then waited for); `false` if some are still running after `limit`. Validation calls
/// it after a look (across databases, on both sides); a writer whose COMMIT lost its answer
/// calls it on that side, whose transaction may still be committing.
pub async fn wait_for_transactions_in_flight(
    pools: &[&PgPool],
    limit: Duration,
) -> Result<bool, CopyError> {
    let mut noted = Vec::with_capacity(pools.len());
    for pool in pools {
        noted.push(InFlight::now(pool).await?);
    }
    let mut ended = true;
    for (in_flight, pool) in noted.iter().zip(pools) {
        ended &= in_flight.settled(pool, limit).await?;
    }
    Ok(ended)
}
