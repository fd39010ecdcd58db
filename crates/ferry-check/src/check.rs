//! The final check: every key read through the target, against what its client says it must
//! hold.

use std::collections::BTreeSet;

use serde::Serialize;

use ferry_domain::TenantId;

use crate::client::{ClientRun, KeyState};
use crate::fields::Fields;
use crate::target::{Seen, Target};

/// Anomalies by kind; all zero is the pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Anomalies {
    /// An acknowledged write missing (a row or a token gone).
    pub lost: u64,
    /// A token present twice: a write applied twice.
    pub duplicated: u64,
    /// A row present that its client deleted.
    pub resurrected: u64,
    /// A read right after a write that did not show it.
    pub stale_read: u64,
    /// A client saw a key's version go back.
    pub version_regression: u64,
    /// A read returned another tenant's row, or found a key under a tenant that never wrote it.
    pub cross_tenant: u64,
    /// A column holds a value no acknowledged write gave it.
    pub corrupted: u64,
    /// A write refused with a definite error took effect (only an unknown outcome may).
    pub phantom: u64,
}

/// One kind of anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Lost,
    Duplicated,
    Resurrected,
    StaleRead,
    VersionRegression,
    CrossTenant,
    Corrupted,
    Phantom,
}

impl Anomalies {
    pub fn count(&mut self, kind: Kind) {
        let n = match kind {
            Kind::Lost => &mut self.lost,
            Kind::Duplicated => &mut self.duplicated,
            Kind::Resurrected => &mut self.resurrected,
            Kind::StaleRead => &mut self.stale_read,
            Kind::VersionRegression => &mut self.version_regression,
            Kind::CrossTenant => &mut self.cross_tenant,
            Kind::Corrupted => &mut self.corrupted,
            Kind::Phantom => &mut self.phantom,
        };
        *n += 1;
    }

    pub fn total(&self) -> u64 {
        self.lost
            + self.duplicated
            + self.resurrected
            + self.stale_read
            + self.version_regression
            + self.cross_tenant
            + self.corrupted
            + self.phantom
    }

    fn add(&mut self, other: &Anomalies) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.resurrected += other.resurrected;
        self.stale_read += other.stale_read;
        self.version_regression += other.version_regression;
        self.cross_tenant += other.cross_tenant;
        self.corrupted += other.corrupted;
        self.phantom += other.phantom;
    }
}

/// What the checker found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub operations: u64,
    /// Writes that failed with an unknown outcome (may or may not have taken effect).
    pub unknown_outcomes: u64,
    /// Writes refused with a definite error (must not have taken effect).
    pub refused: u64,
    pub keys_checked: u64,
    pub anomalies: Anomalies,
    /// Up to 20 anomalies, described.
    pub examples: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.anomalies.total() == 0
    }
}

impl Report {
    fn note(&mut self, kind: Kind, example: String) {
        self.anomalies.count(kind);
        if self.examples.len() < 20 {
            self.examples.push(example);
        }
    }
}

/// Reads every key the clients wrote, under its tenant and under every other tenant of the
/// run, and counts the anomalies (see the crate doc).
pub async fn check(target: &dyn Target, runs: &[ClientRun]) -> Report {
    let mut report = Report::default();
    let tenants: BTreeSet<&TenantId> = runs
        .iter()
        .flat_map(|run| run.keys.keys().map(|(t, _)| t))
        .collect();
    for run in runs {
        report.operations += run.ops;
        report.unknown_outcomes += run.unknown;
        report.refused += run.refused;
        report.anomalies.add(&run.anomalies);
        for e in &run.examples {
            if report.examples.len() < 20 {
                report.examples.push(e.clone());
            }
        }
        for ((tenant, id), state) in &run.keys {
            match target.get(tenant, *id).await {
                Ok(read) => {
                    report.keys_checked += 1;
                    judge(&mut report, tenant, *id, state, read);
                }
                Err(e) => report.note(Kind::Lost, format!("{tenant}/{id}: final read failed: {e}")),
            }
            for other in tenants.iter().filter(|t| **t != tenant) {
                if let Ok(Some(seen)) = target.get(other, *id).await {
                    report.note(
                        Kind::CrossTenant,
                        format!(
                            "{other}/{id}: holds {:?}, a key only {tenant} writes",
                            seen.appends
                        ),
                    );
                }
            }
        }
    }
    report
}

/// One key's final read against what its client says it must hold.
fn judge(report: &mut Report, tenant: &TenantId, id: i64, state: &KeyState, read: Option<Seen>) {
    match (state, read) {
        (KeyState::Unknown, _) | (KeyState::Absent, None) => {}
        (KeyState::Absent, Some(seen)) => report.note(
            Kind::Resurrected,
            format!("{tenant}/{id}: deleted, but holds {:?}", seen.appends),
        ),
        (KeyState::Present { appends }, None) => report.note(
            Kind::Lost,
            format!("{tenant}/{id}: must hold {appends:?}, is gone"),
        ),
        (KeyState::Present { appends }, Some(seen)) if seen.appends != *appends => {
            let kind = if has_duplicates(&seen.appends) {
                Kind::Duplicated
            } else {
                Kind::Lost
            };
            report.note(
                kind,
                format!(
                    "{tenant}/{id}: must hold {appends:?}, holds {:?}",
                    seen.appends
                ),
            );
        }
        (KeyState::Present { appends }, Some(seen)) => {
            if seen.tenant != tenant.as_str() {
                report.note(
                    Kind::CrossTenant,
                    format!("{tenant}/{id}: the row read is tenant {}'s", seen.tenant),
                );
            }
            let expected = Fields::for_appends(appends);
            if let Some(fields) = seen.fields.filter(|f| *f != expected) {
                report.note(
                    Kind::Corrupted,
                    format!("{tenant}/{id}: columns must be {expected:?}, are {fields:?}"),
                );
            }
        }
    }
}

fn has_duplicates(appends: &str) -> bool {
    let mut seen = BTreeSet::new();
    appends.split_whitespace().any(|token| !seen.insert(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_twice_is_a_duplicate() {
        assert!(has_duplicates("c1.1 c1.4 c1.1"));
        assert!(!has_duplicates("c1.1 c1.4"));
    }
}
