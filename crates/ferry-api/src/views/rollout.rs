//! The answer to a phase change or a rollout: which tenants moved, which were refused and
//! why (each, and grouped), and which routers had not yet acknowledged. The CLI's exit codes
//! and the operator log's one-line summary both read this view.

use ferry_engine::{Moved, RolloutReport};
use serde::{Deserialize, Serialize};

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
