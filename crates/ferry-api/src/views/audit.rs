//! Who did what: the audit log's phase changes, the operator log's mutating calls, and the
//! admin API tokens callers act with (listed by name and scope, never the secret). Both logs
//! are append-only in the store; these views only read them.

use chrono::{DateTime, Utc};
use ferry_store::{AuditEntry, OperationRecord};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditView {
    pub seq: i64,
    pub migration: String,
    pub tenant: String,
    pub action: String,
    pub from_phase: String,
    pub from_paused: bool,
    pub to_phase: String,
    pub to_paused: bool,
    pub actor: String,
    pub reason: String,
    pub forced_guards: Vec<String>,
    pub at: DateTime<Utc>,
}

impl From<&AuditEntry> for AuditView {
    fn from(e: &AuditEntry) -> Self {
        AuditView {
            seq: e.seq,
            migration: e.migration.to_string(),
            tenant: e.tenant.to_string(),
            action: e.action.as_str().to_owned(),
            from_phase: e.from_phase.as_str().to_owned(),
            from_paused: e.from_paused,
            to_phase: e.to_phase.as_str().to_owned(),
            to_paused: e.to_paused,
            actor: e.actor.clone(),
            reason: e.reason.clone(),
            forced_guards: e
                .forced_guards
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect(),
            at: e.at,
        }
    }
}

/// One entry of the operator log: a mutating call, who made it, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationView {
    pub seq: i64,
    pub actor: String,
    pub operation: String,
    pub target: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
}

impl From<&OperationRecord> for OperationView {
    fn from(o: &OperationRecord) -> Self {
        OperationView {
            seq: o.seq,
            actor: o.actor.clone(),
            operation: o.operation.clone(),
            target: o.target.clone(),
            outcome: o.outcome.clone(),
            at: o.at,
        }
    }
}

/// An API token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenView {
    pub name: String,
    pub scope: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&ferry_store::TokenRecord> for TokenView {
    fn from(t: &ferry_store::TokenRecord) -> Self {
        TokenView {
            name: t.name.clone(),
            scope: t.scope.as_str().to_owned(),
            created_by: t.created_by.clone(),
            created_at: t.created_at,
            revoked_at: t.revoked_at,
        }
    }
}
