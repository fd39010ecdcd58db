//! The rules for changing a tenant's phase: one table, named guards, explicit force.
//!
//! A phase change is planned in two pure steps. [`Transition::plan`] looks the requested
//! [`Action`] up in [`RULES`] and says which guards apply; [`Transition::check`] evaluates
//! those guards against [`GuardFacts`] that the caller gathered from the control store. The
//! caller then persists the result (with an optimistic version check) and writes the audit
//! entry. Nothing here can observe or change the world, so the whole matrix is unit-tested.

use std::fmt;

use crate::phase::Phase;

/// What an operator (or a policy) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// One step forward in [`Phase::ALL`].
    Advance,
    /// Straight back to `legacy`.
    Rollback,
    /// Set the paused flag: workers stop moving this tenant's data; routing is unchanged.
    Pause,
    /// Clear the paused flag.
    Resume,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Advance,
        Action::Rollback,
        Action::Pause,
        Action::Resume,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Advance => "advance",
            Action::Rollback => "rollback",
            Action::Pause => "pause",
            Action::Resume => "resume",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named precondition of a phase change. Each is evaluated from [`GuardFacts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Guard {
    /// The copier has copied and validated all of the tenant's history to the target.
    BackfillComplete,
    /// Validation has no mismatch for the tenant that a later re-check did not resolve.
    NoUnresolvedMismatches,
    /// The update buffer holds no pending or dead-lettered change for the tenant.
    BufferDrained,
    /// Every live router has acknowledged the tenant's current phase, so no process is more
    /// than one phase behind once this change lands.
    RoutersAcknowledged,
    /// The source is current: the tenant has not entered `target_only` since it last left
    /// `legacy`, or a reverse copy has caught the source up since it did.
    ReverseSyncComplete,
}

impl Guard {
    pub const ALL: [Guard; 5] = [
        Guard::BackfillComplete,
        Guard::NoUnresolvedMismatches,
        Guard::BufferDrained,
        Guard::RoutersAcknowledged,
        Guard::ReverseSyncComplete,
    ];

    /// Persisted in the audit log when a guard is skipped with `--force`.
    pub fn as_str(self) -> &'static str {
        match self {
            Guard::BackfillComplete => "backfill_complete",
            Guard::NoUnresolvedMismatches => "no_unresolved_mismatches",
            Guard::BufferDrained => "buffer_drained",
            Guard::RoutersAcknowledged => "routers_acknowledged",
            Guard::ReverseSyncComplete => "reverse_sync_complete",
        }
    }

    pub fn parse(s: &str) -> Option<Guard> {
        Guard::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One legal phase change and the guards it must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    pub from: Phase,
    pub to: Phase,
    pub guards: &'static [Guard],
}

use Guard::*;
use Phase::*;

/// Every legal phase change. A change not listed here is refused.
///
/// Advancing is one step at a time, and so is rolling back where it matters:
///
/// - from `dual_write` and `shadow`, straight to `legacy` (both already read the source, so a
///   router still on them and one already on `legacy` read and write compatibly);
/// - from `target_primary`, to `shadow`: authority returns to the source while writes still
///   reach both sides, so a lagging `target_primary` router, which reads the target, still
///   sees writes made under the new phase (going straight to `legacy` would not);
/// - from `target_only`, to `target_primary`: writes reach the source again, and the reverse
///   copy catches it up; only then ([`Guard::ReverseSyncComplete`]) may authority return.
///
/// So any two phases that live routers can be in at once are joined by a rule, and the phase
/// table in [`crate::route`] is checked to be safe for every such pair. From `complete` the
/// source is retired: no rollback.
/// Every change waits for [`Guard::RoutersAcknowledged`], which keeps all live routers within
/// one phase of each other; the phase table in [`crate::route`] is safe for adjacent phases.
pub const RULES: &[Rule] = &[
    Rule {
        action: Action::Advance,
        from: Legacy,
        to: DualWrite,
        guards: &[RoutersAcknowledged],
    },
    Rule {
        action: Action::Advance,
        from: DualWrite,
        to: Shadow,
        guards: &[BackfillComplete, RoutersAcknowledged],
    },
    Rule {
        action: Action::Advance,
        from: Shadow,
        to: TargetPrimary,
        guards: &[
            BackfillComplete,
            NoUnresolvedMismatches,
            BufferDrained,
            RoutersAcknowledged,
        ],
    },
    Rule {
        action: Action::Advance,
        from: TargetPrimary,
        to: TargetOnly,
        guards: &[NoUnresolvedMismatches, BufferDrained, RoutersAcknowledged],
    },
    Rule {
        action: Action::Advance,
        from: TargetOnly,
        to: Complete,
        guards: &[BufferDrained, RoutersAcknowledged],
    },
    Rule {
        action: Action::Rollback,
        from: DualWrite,
        to: Legacy,
        guards: &[RoutersAcknowledged],
    },
    Rule {
        action: Action::Rollback,
        from: Shadow,
        to: Legacy,
        guards: &[RoutersAcknowledged],
    },
    Rule {
        action: Action::Rollback,
        from: TargetPrimary,
        to: Shadow,
        guards: &[
            ReverseSyncComplete,
            NoUnresolvedMismatches,
            BufferDrained,
            RoutersAcknowledged,
        ],
    },
    Rule {
        action: Action::Rollback,
        from: TargetOnly,
        to: TargetPrimary,
        guards: &[RoutersAcknowledged],
    },
];

/// A tenant's persisted phase state, as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantPhase {
    pub phase: Phase,
    pub paused: bool,
    /// Incremented by every change; the optimistic-concurrency token.
    pub version: i64,
}

impl TenantPhase {
    pub const INITIAL: TenantPhase = TenantPhase {
        phase: Phase::Legacy,
        paused: false,
        version: 0,
    };
}

/// What the control store knows about a tenant that the guards need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardFacts {
    pub backfill_complete: bool,
    pub backfill_rows_done: u64,
    pub backfill_rows_total: u64,
    /// The source holds every acknowledged write (see [`Guard::ReverseSyncComplete`]).
    pub source_current: bool,
    pub unresolved_mismatches: u64,
    pub buffer_depth: u64,
    /// Live routers that have not yet seen the tenant's current phase.
    pub lagging_routers: Vec<String>,
}

/// A guard that did not hold, with the numbers that show why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardFailure {
    #[error("backfill not complete ({rows_done} of ~{rows_total} rows copied)")]
    BackfillIncomplete { rows_done: u64, rows_total: u64 },
    #[error("{count} unresolved validation mismatch(es)")]
    UnresolvedMismatches { count: u64 },
    #[error("update buffer not drained ({depth} pending)")]
    BufferNotDrained { depth: u64 },
    #[error("{} live router(s) have not acknowledged the current phase: {}", routers.len(), routers.join(", "))]
    RoutersNotAcknowledged { routers: Vec<String> },
    #[error(
        "the source is stale since the tenant entered target_only; the reverse copy must complete first"
    )]
    ReverseSyncIncomplete,
}

impl GuardFailure {
    pub fn guard(&self) -> Guard {
        match self {
            GuardFailure::BackfillIncomplete { .. } => BackfillComplete,
            GuardFailure::UnresolvedMismatches { .. } => NoUnresolvedMismatches,
            GuardFailure::BufferNotDrained { .. } => BufferDrained,
            GuardFailure::RoutersNotAcknowledged { .. } => RoutersAcknowledged,
            GuardFailure::ReverseSyncIncomplete => ReverseSyncComplete,
        }
    }
}

impl Guard {
    /// Evaluates this guard; `Ok` if it holds.
    pub fn evaluate(self, facts: &GuardFacts) -> Result<(), GuardFailure> {
        match self {
            BackfillComplete if !facts.backfill_complete => Err(GuardFailure::BackfillIncomplete {
                rows_done: facts.backfill_rows_done,
                rows_total: facts.backfill_rows_total,
            }),
            NoUnresolvedMismatches if facts.unresolved_mismatches > 0 => {
                Err(GuardFailure::UnresolvedMismatches {
                    count: facts.unresolved_mismatches,
                })
            }
            BufferDrained if facts.buffer_depth > 0 => Err(GuardFailure::BufferNotDrained {
                depth: facts.buffer_depth,
            }),
            RoutersAcknowledged if !facts.lagging_routers.is_empty() => {
                Err(GuardFailure::RoutersNotAcknowledged {
                    routers: facts.lagging_routers.clone(),
                })
            }
            ReverseSyncComplete if !facts.source_current => {
                Err(GuardFailure::ReverseSyncIncomplete)
            }
            _ => Ok(()),
        }
    }
}

/// Why a requested change cannot happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    #[error("cannot advance from {phase}: it is the last phase")]
    AlreadyComplete { phase: Phase },
    #[error("cannot roll back from {phase}: {why}")]
    CannotRollBack { phase: Phase, why: &'static str },
    #[error("tenant is paused; resume it before advancing")]
    Paused,
    #[error("tenant is already paused")]
    AlreadyPaused,
    #[error("tenant is not paused")]
    NotPaused,
    #[error("guards failed: {}", join_failures(.0))]
    GuardsFailed(Vec<GuardFailure>),
}

fn join_failures(failures: &[GuardFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A planned change of one tenant's phase state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub action: Action,
    pub from: TenantPhase,
    pub to_phase: Phase,
    pub to_paused: bool,
    /// Guards that must hold (or be forced).
    pub guards: &'static [Guard],
}

/// The outcome of [`Transition::check`]: guards that held were not recorded; guards that
/// failed and were forced are, so the audit log can show exactly what was overridden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub transition: Transition,
    pub forced: Vec<GuardFailure>,
}

impl Checked {
    /// Whether `guard` applies to this change and was not forced past: the store must then
    /// re-check it inside the write, in case it stopped holding since the facts were read.
    pub fn requires_unforced(&self, guard: Guard) -> bool {
        self.transition.guards.contains(&guard) && !self.forced.iter().any(|f| f.guard() == guard)
    }
}

impl Transition {
    /// Looks the action up in [`RULES`] for the tenant's current state.
    pub fn plan(current: TenantPhase, action: Action) -> Result<Transition, TransitionError> {
        let phase_change = |to_paused: bool| -> Result<Transition, TransitionError> {
            let rule = RULES
                .iter()
                .find(|r| r.action == action && r.from == current.phase)
                .ok_or_else(|| no_rule_error(current.phase, action))?;
            Ok(Transition {
                action,
                from: current,
                to_phase: rule.to,
                to_paused,
                guards: rule.guards,
            })
        };
        match action {
            Action::Advance if current.paused => Err(TransitionError::Paused),
            // A rollback keeps the paused flag: pausing is how an operator holds a tenant,
            // and rolling it back should not silently release it.
            Action::Advance | Action::Rollback => phase_change(current.paused),
            Action::Pause if current.paused => Err(TransitionError::AlreadyPaused),
            Action::Resume if !current.paused => Err(TransitionError::NotPaused),
            Action::Pause | Action::Resume => Ok(Transition {
                action,
                from: current,
                to_phase: current.phase,
                to_paused: action == Action::Pause,
                guards: &[],
            }),
        }
    }

    /// Evaluates the guards. With `force`, failed guards are let through and returned so
    /// the caller records them; without it, any failure refuses the change.
    pub fn check(self, facts: &GuardFacts, force: bool) -> Result<Checked, TransitionError> {
        let failures: Vec<GuardFailure> = self
            .guards
            .iter()
            .filter_map(|g| g.evaluate(facts).err())
            .collect();
        if !failures.is_empty() && !force {
            return Err(TransitionError::GuardsFailed(failures));
        }
        Ok(Checked {
            transition: self,
            forced: failures,
        })
    }

    /// Whether this change moves where some write goes. Such a change is effective only
    /// once every live router has acknowledged it.
    pub fn changes_routing(&self) -> bool {
        self.from.phase != self.to_phase
    }

    /// Whether the authoritative side changes (see [`Phase::authority`]).
    pub fn flips_authority(&self) -> bool {
        self.from.phase.authority() != self.to_phase.authority()
    }
}

fn no_rule_error(phase: Phase, action: Action) -> TransitionError {
    match (action, phase) {
        (Action::Rollback, Legacy) => TransitionError::CannotRollBack {
            phase,
            why: "the tenant is already on the source",
        },
        (Action::Rollback, Complete) => TransitionError::CannotRollBack {
            phase,
            why: "the source copy has been retired; migrate back with a new migration",
        },
        (Action::Rollback, _) => TransitionError::CannotRollBack {
            phase,
            why: "no rollback rule for this phase",
        },
        _ => TransitionError::AlreadyComplete { phase },
    }
}

#[cfg(test)]
mod tests;
