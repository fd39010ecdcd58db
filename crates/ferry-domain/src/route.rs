//! Where reads and writes go in each phase.
//!
//! These are the phase's half of a route decision; the router adds the per-key half
//! (location lookup, buffered changes, fallbacks) in later layers. Keeping the phase table
//! here, as data, means there is exactly one place that says "shadow writes to both sides".

use crate::phase::{Phase, Side};

/// Which sides a write touches, in order. The first is authoritative: its failure fails the
/// request. The second, if any, is attempted after and parked in the update buffer on failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePlan {
    pub first: Side,
    pub then: Option<Side>,
}

/// Where a read is served from, and what else happens alongside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPlan {
    /// The side whose answer is returned.
    pub serve: Side,
    /// Also read this side and compare (shadow reads); the answer is not returned.
    pub compare: Option<Side>,
    /// On failure of `serve`, answer from this side instead (a fallback event).
    pub fallback: Option<Side>,
}

impl WritePlan {
    pub fn for_phase(phase: Phase) -> WritePlan {
        let (first, then) = match phase {
            Phase::Legacy => (Side::Source, None),
            Phase::DualWrite | Phase::Shadow => (Side::Source, Some(Side::Target)),
            Phase::TargetPrimary => (Side::Target, Some(Side::Source)),
            Phase::TargetOnly | Phase::Complete => (Side::Target, None),
        };
        debug_assert_eq!(first, phase.authority());
        WritePlan { first, then }
    }

    pub fn touches(self, side: Side) -> bool {
        self.first == side || self.then == Some(side)
    }
}

impl ReadPlan {
    pub fn for_phase(phase: Phase) -> ReadPlan {
        match phase {
            Phase::Legacy | Phase::DualWrite => ReadPlan {
                serve: Side::Source,
                compare: None,
                fallback: None,
            },
            Phase::Shadow => ReadPlan {
                serve: Side::Source,
                compare: Some(Side::Target),
                fallback: None,
            },
            Phase::TargetPrimary => ReadPlan {
                serve: Side::Target,
                compare: None,
                fallback: Some(Side::Source),
            },
            Phase::TargetOnly | Phase::Complete => ReadPlan {
                serve: Side::Target,
                compare: None,
                fallback: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn table() -> String {
        let mut out = String::new();
        for phase in Phase::ALL {
            let w = WritePlan::for_phase(phase);
            let r = ReadPlan::for_phase(phase);
            let opt = |s: Option<Side>| s.map_or("-", Side::as_str);
            out.push_str(&format!(
                "{:<15} write {}+{:<7} read {} compare {:<7} fallback {}\n",
                phase.as_str(),
                w.first,
                opt(w.then),
                r.serve,
                opt(r.compare),
                opt(r.fallback),
            ));
        }
        out
    }

    #[test]
    fn phase_routing_table() {
        expect![[r#"
            legacy          write source+-       read source compare -       fallback -
            dual_write      write source+target  read source compare -       fallback -
            shadow          write source+target  read source compare target  fallback -
            target_primary  write target+source  read target compare -       fallback source
            target_only     write target+-       read target compare -       fallback -
            complete        write target+-       read target compare -       fallback -
        "#]]
        .assert_eq(&table());
    }

    /// Live routers can be in two phases at once only if a rule joins them (the
    /// acknowledgement barrier guarantees no more). For every rule, in both directions, a
    /// write acknowledged by a router in either phase must land where a router in the other
    /// phase reads, or the copier must still be running to carry it over.
    #[test]
    fn phases_joined_by_a_rule_never_hide_a_write() {
        use crate::transition::RULES;
        for rule in RULES {
            for (writer, reader) in [(rule.from, rule.to), (rule.to, rule.from)] {
                let read = ReadPlan::for_phase(reader).serve;
                // legacy -> dual_write: the copier starts only once every router is in
                // dual_write, so legacy-only writes are carried over by the backfill.
                let carried_by_copier = writer == Phase::Legacy && reader == Phase::DualWrite;
                assert!(
                    WritePlan::for_phase(writer).touches(read) || carried_by_copier,
                    "{:?}: a router in {writer} writes where a router in {reader} does not read",
                    rule
                );
            }
        }
    }
}
