//! What `ferry status`, `ferry migration show` and `GET /api/v1/status` answer: each
//! migration's tenants per phase with its buffer, validation, copies and route decisions, and
//! the routers following the phases. Built from store rows in one place, so the CLI's table
//! and the API's JSON cannot disagree.

use chrono::{DateTime, Utc};
use ferry_domain::Phase;
use ferry_store::{
    BackfillProgress, Migration, MigrationHealth, PhaseCount, RouteCount, RouterRecord,
};
use serde::{Deserialize, Serialize};

use crate::{BufferSummary, CopySummary};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationView {
    pub id: String,
    pub kind: String,
    pub description: String,
    pub config: serde_json::Value,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<&Migration> for MigrationView {
    fn from(m: &Migration) -> Self {
        MigrationView {
            id: m.id.to_string(),
            kind: m.kind.as_str().to_owned(),
            description: m.description.clone(),
            config: m.config.clone(),
            created_by: m.created_by.clone(),
            created_at: m.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseTally {
    pub phase: String,
    pub tenants: u64,
    pub paused: u64,
    pub rows: u64,
}

/// One migration's tenants per phase (every phase present, zeros included, in phase order),
/// its update buffer, validation, copies in progress and the routers' decisions for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationStatus {
    pub migration: String,
    pub kind: String,
    pub tenants: u64,
    pub paused: u64,
    pub phases: Vec<PhaseTally>,
    pub buffer: BufferSummary,
    pub mismatches: MismatchSummary,
    pub copies: CopySummary,
    /// Route decisions summed over registered routers, by operation, phase, path and reason.
    /// An operation that falls back has two: its first decision and a `fallback` one.
    pub routes: Vec<RouteTally>,
    /// Operations routed: decisions other than fallbacks.
    pub routed: u64,
    /// Reads answered by the other side because the served one failed.
    pub fallbacks: u64,
}

impl MigrationStatus {
    /// Operations routed, by path: the decisions other than fallbacks (which `fallbacks`
    /// counts), summed over operations, phases and reasons.
    pub fn routed_by_path(&self) -> std::collections::BTreeMap<&str, u64> {
        let mut by_path = std::collections::BTreeMap::new();
        for r in self.routes.iter().filter(|r| r.reason != "fallback") {
            *by_path.entry(r.path.as_str()).or_default() += r.count;
        }
        by_path
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MismatchSummary {
    pub open: u64,
    pub total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTally {
    pub operation: String,
    pub phase: String,
    pub path: String,
    pub reason: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterView {
    pub id: String,
    pub description: String,
    pub seen_version: i64,
    pub live: bool,
    pub heartbeat_at: DateTime<Utc>,
}

impl From<&RouterRecord> for RouterView {
    fn from(r: &RouterRecord) -> Self {
        RouterView {
            id: r.id.to_string(),
            description: r.description.clone(),
            seen_version: r.seen_version,
            live: r.live,
            heartbeat_at: r.heartbeat_at,
        }
    }
}

/// What `ferry status` and `GET /api/v1/status` show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub store: String,
    pub change_version: i64,
    pub migrations: Vec<MigrationStatus>,
    pub routers: Vec<RouterView>,
}

/// What a migration's status is built from, besides its phase counts.
#[derive(Debug, Clone, Default)]
pub struct MigrationFacts {
    pub health: MigrationHealth,
    pub progress: Vec<BackfillProgress>,
}

impl Status {
    /// `facts` holds one entry per migration, in the same order; route counts are per router.
    pub fn build(
        store: String,
        change_version: i64,
        migrations: &[Migration],
        counts: &[PhaseCount],
        facts: &[MigrationFacts],
        route_counts: &[(ferry_domain::RouterId, RouteCount)],
        routers: &[RouterRecord],
    ) -> Status {
        let empty = MigrationFacts::default();
        let migrations = migrations
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let facts = facts.get(i).unwrap_or(&empty);
                let mut phases: Vec<PhaseTally> = Phase::ALL
                    .iter()
                    .map(|p| PhaseTally {
                        phase: p.as_str().to_owned(),
                        tenants: 0,
                        paused: 0,
                        rows: 0,
                    })
                    .collect();
                let (mut tenants, mut paused) = (0, 0);
                for c in counts.iter().filter(|c| c.migration == m.id) {
                    let tally = &mut phases[c.phase.ordinal()];
                    tally.tenants = c.tenants;
                    tally.paused = c.paused;
                    tally.rows = c.rows;
                    tenants += c.tenants;
                    paused += c.paused;
                }
                let routes = route_tallies(m.id.as_str(), route_counts);
                MigrationStatus {
                    migration: m.id.to_string(),
                    kind: m.kind.as_str().to_owned(),
                    tenants,
                    paused,
                    phases,
                    buffer: BufferSummary {
                        pending: facts.health.buffer_pending,
                        dead: facts.health.buffer_dead,
                        retrying: facts.health.buffer_retrying,
                        attempts: facts.health.buffer_attempts,
                        oldest_pending_at: facts.health.buffer_oldest_pending_at,
                    },
                    mismatches: MismatchSummary {
                        open: facts.health.mismatches_open,
                        total: facts.health.mismatches_total,
                    },
                    copies: CopySummary::build(&facts.progress),
                    fallbacks: routes
                        .iter()
                        .filter(|r| r.reason == "fallback")
                        .map(|r| r.count)
                        .sum(),
                    routed: routes
                        .iter()
                        .filter(|r| r.reason != "fallback")
                        .map(|r| r.count)
                        .sum(),
                    routes,
                }
            })
            .collect();
        Status {
            store,
            change_version,
            migrations,
            routers: routers.iter().map(RouterView::from).collect(),
        }
    }
}

/// `ferry migration show --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationDetail {
    pub migration: MigrationView,
    pub status: MigrationStatus,
}

/// Route counts of one migration summed over routers.
fn route_tallies(
    migration: &str,
    counts: &[(ferry_domain::RouterId, RouteCount)],
) -> Vec<RouteTally> {
    let mut sums: std::collections::BTreeMap<(&str, &str, &str, &str), u64> = Default::default();
    for (_, c) in counts.iter().filter(|(_, c)| c.migration == migration) {
        *sums
            .entry((&c.operation, &c.phase, &c.path, &c.reason))
            .or_default() += c.count;
    }
    sums.into_iter()
        .map(|((operation, phase, path, reason), count)| RouteTally {
            operation: operation.to_owned(),
            phase: phase.to_owned(),
            path: path.to_owned(),
            reason: reason.to_owned(),
            count,
        })
        .collect()
}
