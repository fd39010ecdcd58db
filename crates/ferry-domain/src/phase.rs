//! The phases a tenant moves through, per migration.
//!
//! ```text
//! legacy -> dual_write -> shadow -> target_primary -> target_only -> complete
//! ```
//!
//! The names returned by [`Phase::as_str`] are persisted in the control store and printed by
//! the CLI and the API; they are a compatibility boundary and must never change.

use std::fmt;
use std::str::FromStr;

/// One step of a tenant's move from the source path to the target path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Everything on the source. The starting point of every tenant.
    Legacy,
    /// Writes go to both sides (source first); the copier backfills history.
    DualWrite,
    /// Like dual write, and reads are also served from the target and compared.
    Shadow,
    /// The target is authoritative; reads fall back to the source on failure.
    TargetPrimary,
    /// Only the target is written and read.
    TargetOnly,
    /// The source copy is retired. Terminal.
    Complete,
}

/// The two places a tenant's data can live during a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Source,
    Target,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Source => Side::Target,
            Side::Target => Side::Source,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown phase {0:?}; expected one of legacy, dual_write, shadow, target_primary, target_only, complete"
)]
pub struct ParsePhaseError(pub String);

impl Phase {
    /// Every phase, in the order a tenant moves through them.
    pub const ALL: [Phase; 6] = [
        Phase::Legacy,
        Phase::DualWrite,
        Phase::Shadow,
        Phase::TargetPrimary,
        Phase::TargetOnly,
        Phase::Complete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Legacy => "legacy",
            Phase::DualWrite => "dual_write",
            Phase::Shadow => "shadow",
            Phase::TargetPrimary => "target_primary",
            Phase::TargetOnly => "target_only",
            Phase::Complete => "complete",
        }
    }

    /// Position in [`Phase::ALL`], for ordering and compact display.
    pub fn ordinal(self) -> usize {
        self as usize
    }

    /// The phase an advance leads to, if any.
    pub fn next(self) -> Option<Phase> {
        Phase::ALL.get(self.ordinal() + 1).copied()
    }

    /// The side whose write decides whether a request succeeds. Writes go there first; the
    /// other side is best effort, with failures parked in the update buffer.
    pub fn authority(self) -> Side {
        match self {
            Phase::Legacy | Phase::DualWrite | Phase::Shadow => Side::Source,
            Phase::TargetPrimary | Phase::TargetOnly | Phase::Complete => Side::Target,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = ParsePhaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|phase| phase.as_str() == s)
            .ok_or_else(|| ParsePhaseError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_names_round_trip() {
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>(), Ok(phase));
        }
        let names: Vec<_> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "legacy",
                "dual_write",
                "shadow",
                "target_primary",
                "target_only",
                "complete"
            ]
        );
        assert!("Legacy".parse::<Phase>().is_err());
    }

    #[test]
    fn next_walks_the_order_and_stops() {
        let mut walked = vec![Phase::Legacy];
        while let Some(next) = walked.last().and_then(|p| p.next()) {
            walked.push(next);
        }
        assert_eq!(walked, Phase::ALL);
    }

    #[test]
    fn authority_flips_once() {
        let flips = Phase::ALL
            .windows(2)
            .filter(|w| w[0].authority() != w[1].authority())
            .count();
        assert_eq!(flips, 1);
        assert_eq!(Phase::Shadow.authority(), Side::Source);
        assert_eq!(Phase::TargetPrimary.authority(), Side::Target);
    }
}
