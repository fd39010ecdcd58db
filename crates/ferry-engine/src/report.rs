//! What a rollout did, tenant by tenant.

use ferry_domain::{Action, GuardFailure, Phase, TenantId, TenantPhase, TransitionError};

/// A tenant whose change was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub tenant: TenantId,
    pub action: Action,
    pub from: TenantPhase,
    pub to_phase: Phase,
    pub to_paused: bool,
    /// Guards that failed and were overridden with `--force`.
    pub forced: Vec<GuardFailure>,
    /// The change counter the change carries; see [`crate::PhaseEngine::wait_acknowledged`].
    pub change_version: i64,
}

/// Why a tenant was not changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not registered in this migration")]
    NotRegistered,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("changed concurrently by someone else; re-run to act on its new phase")]
    Conflict,
    #[error("is in {actual}, not {expected} as the request expected")]
    UnexpectedPhase { expected: Phase, actual: Phase },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub tenant: TenantId,
    pub reason: Refusal,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolloutReport {
    pub moved: Vec<Moved>,
    pub refused: Vec<Refused>,
}

impl RolloutReport {
    /// The highest change counter among the applied changes (0 if none).
    pub fn change_version(&self) -> i64 {
        self.moved
            .iter()
            .map(|m| m.change_version)
            .max()
            .unwrap_or(0)
    }

    /// Refusals grouped by their message, largest group first: what an operator reads
    /// when 40,000 tenants were refused for three reasons.
    pub fn refusal_summary(&self) -> Vec<(String, usize)> {
        let mut groups: std::collections::BTreeMap<String, usize> = Default::default();
        for r in &self.refused {
            *groups.entry(summary_key(&r.reason)).or_default() += 1;
        }
        let mut out: Vec<_> = groups.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

/// Groups refusals by kind, dropping per-tenant numbers (row counts, router lists).
fn summary_key(reason: &Refusal) -> String {
    match reason {
        Refusal::Transition(TransitionError::GuardsFailed(failures)) => {
            let guards: Vec<&str> = failures.iter().map(|f| f.guard().as_str()).collect();
            format!("guards failed: {}", guards.join(", "))
        }
        other => other.to_string(),
    }
}

/// Whether live routers have caught up with a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement {
    pub change_version: i64,
    /// Live routers that have not acknowledged `change_version` yet; empty once effective.
    pub lagging: Vec<String>,
}

impl Acknowledgement {
    pub fn effective(&self) -> bool {
        self.lagging.is_empty()
    }
}
