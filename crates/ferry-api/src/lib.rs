//! The serialized shape of what Ferry reports: `--json` output of the CLI today, the admin
//! HTTP API's bodies later. Domain and store types stay free of serde; these views are built
//! from them at the boundary, and their field names are a compatibility promise.
//!
//! [`ops::Operations`] is the one implementation of every operator action and query: the CLI
//! prints its answers, the admin API serializes them.

mod error;
pub mod ops;
pub mod tokens;
mod views;

pub use error::OpsError;
pub use views::*;

use chrono::{DateTime, Utc};
use ferry_engine::{Moved, RolloutReport};
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovedView {
    pub tenant: String,
    pub from: String,
    pub to: String,
    pub paused: bool,
    pub forced: Vec<String>,
}

impl From<&Moved> for MovedView {
    fn from(m: &Moved) -> Self {
        MovedView {
            tenant: m.tenant.to_string(),
            from: m.from.phase.as_str().to_owned(),
            to: m.to_phase.as_str().to_owned(),
            paused: m.to_paused,
            forced: m.forced.iter().map(|f| f.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedView {
    pub tenant: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalTally {
    pub reason: String,
    pub tenants: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutView {
    pub action: String,
    pub dry_run: bool,
    pub moved: Vec<MovedView>,
    pub refused: Vec<RefusedView>,
    /// Refusals grouped by kind (per-tenant figures left out), most frequent first.
    pub refusal_summary: Vec<RefusalTally>,
    pub change_version: i64,
    /// Live routers that had not acknowledged the change when the command returned.
    pub pending_acknowledgement: Vec<String>,
}

impl RolloutView {
    pub fn build(
        action: ferry_domain::Action,
        dry_run: bool,
        report: &RolloutReport,
        pending: Vec<String>,
    ) -> RolloutView {
        RolloutView {
            action: action.as_str().to_owned(),
            dry_run,
            moved: report.moved.iter().map(MovedView::from).collect(),
            refused: report
                .refused
                .iter()
                .map(|r| RefusedView {
                    tenant: r.tenant.to_string(),
                    reason: r.reason.to_string(),
                })
                .collect(),
            refusal_summary: report
                .refusal_summary()
                .into_iter()
                .map(|(reason, n)| RefusalTally {
                    reason,
                    tenants: n as u64,
                })
                .collect(),
            change_version: report.change_version(),
            pending_acknowledgement: pending,
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
