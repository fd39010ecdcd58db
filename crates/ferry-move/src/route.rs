//! The route decision of one operation: a value, counted and logged, not an `if` chain.

use ferry_domain::{Phase, ReadPlan, Side, WritePlan};

/// Where an operation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Source,
    Target,
    /// Authoritative side first, then the other.
    Both {
        first: Side,
    },
}

/// Why it goes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// The tenant's phase says so.
    Phase(Phase),
    /// The served side failed and the phase allows answering from the other.
    Fallback(Phase),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDecision {
    pub path: Path,
    pub reason: RouteReason,
    /// Shadow reads: also read this side and compare.
    pub compare: Option<Side>,
    /// Reads: where to answer from if the served side fails.
    pub fallback: Option<Side>,
}

fn side_path(side: Side) -> Path {
    match side {
        Side::Source => Path::Source,
        Side::Target => Path::Target,
    }
}

impl RouteDecision {
    pub fn write(phase: Phase) -> RouteDecision {
        let plan = WritePlan::for_phase(phase);
        RouteDecision {
            path: match plan.then {
                Some(_) => Path::Both { first: plan.first },
                None => side_path(plan.first),
            },
            reason: RouteReason::Phase(phase),
            compare: None,
            fallback: None,
        }
    }

    pub fn read(phase: Phase) -> RouteDecision {
        let plan = ReadPlan::for_phase(phase);
        RouteDecision {
            path: side_path(plan.serve),
            reason: RouteReason::Phase(phase),
            compare: plan.compare,
            fallback: plan.fallback,
        }
    }

    /// The sides a write touches, in order.
    pub fn write_sides(&self) -> (Side, Option<Side>) {
        match self.path {
            Path::Source => (Side::Source, None),
            Path::Target => (Side::Target, None),
            Path::Both { first } => (first, Some(first.other())),
        }
    }

    /// The path as a metrics label.
    pub fn path_label(&self) -> &'static str {
        match self.path {
            Path::Source => "source",
            Path::Target => "target",
            Path::Both {
                first: Side::Source,
            } => "source_then_target",
            Path::Both {
                first: Side::Target,
            } => "target_then_source",
        }
    }

    /// The reason as a metrics label, and the phase it was taken in.
    pub fn reason_label(&self) -> (&'static str, Phase) {
        match self.reason {
            RouteReason::Phase(p) => ("phase", p),
            RouteReason::Fallback(p) => ("fallback", p),
        }
    }

    pub fn served(&self) -> Side {
        match self.path {
            Path::Source => Side::Source,
            Path::Target => Side::Target,
            Path::Both { first } => first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_the_phase_table() {
        let w = RouteDecision::write(Phase::TargetPrimary);
        assert_eq!(w.write_sides(), (Side::Target, Some(Side::Source)));
        let r = RouteDecision::read(Phase::Shadow);
        assert_eq!((r.served(), r.compare), (Side::Source, Some(Side::Target)));
        let r = RouteDecision::read(Phase::TargetPrimary);
        assert_eq!((r.served(), r.fallback), (Side::Target, Some(Side::Source)));
        assert_eq!(
            RouteDecision::write(Phase::Legacy).write_sides(),
            (Side::Source, None)
        );
        assert_eq!(
            RouteDecision::write(Phase::Complete).write_sides(),
            (Side::Target, None)
        );
    }
}
