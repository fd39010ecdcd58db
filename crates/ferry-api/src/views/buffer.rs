//! The update buffer as operators see it: a migration's totals for its status, each open
//! change (`ferry buffer list`), and the answer to a retry or drop. Changes that failed too
//! often wait here for an operator, so the views carry attempts and the last error.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BufferSummary {
    /// Changes waiting to be applied.
    pub pending: u64,
    /// Changes that failed too often and wait for an operator (`ferry buffer retry|drop`).
    pub dead: u64,
    /// Pending changes that have failed at least once.
    pub retrying: u64,
    /// Failed attempts, summed over open changes.
    pub attempts: u64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
}

/// A change in, or parked by, the update buffer (`ferry buffer list`, `GET …/buffer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferView {
    pub seq: i64,
    pub tenant: String,
    pub key: String,
    pub operation: String,
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub enqueued_at: DateTime<Utc>,
}

impl From<&ferry_store::BufferedUpdate> for BufferView {
    fn from(u: &ferry_store::BufferedUpdate) -> Self {
        BufferView {
            seq: u.seq,
            tenant: u.tenant.to_string(),
            key: u.key.clone(),
            operation: u.operation.clone(),
            state: u.state.clone(),
            attempts: u.attempts,
            last_error: u.last_error.clone(),
            enqueued_at: u.enqueued_at,
        }
    }
}

/// The answer to a buffer operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferActionView {
    pub seq: i64,
    pub action: String,
    pub state: String,
}
