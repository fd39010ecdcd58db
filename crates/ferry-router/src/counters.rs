//! Route decisions counted in process: by migration, operation, phase, path and reason.
//!
//! Each decision is counted twice, on purpose: through the `metrics` facade (so an
//! application that installs a Prometheus recorder exposes `ferry_route_decisions_total`
//! itself), and in this table, which the router sends to the control store with its
//! heartbeat so `ferry serve` can show every application instance's routing in one place.
//! Labels are low-cardinality by construction: no tenant id or key is ever a label.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use ferry_domain::Phase;
use ferry_store::RouteCount;

/// Whether a decision routed a read or a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteOp {
    Read,
    Write,
}

impl RouteOp {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteOp::Read => "read",
            RouteOp::Write => "write",
        }
    }
}

/// `(operation, phase, path, reason)`: every part a fixed string.
type Labels = (RouteOp, Phase, &'static str, &'static str);

#[derive(Default)]
pub(crate) struct RouteCounters {
    by_migration: Mutex<HashMap<String, HashMap<Labels, u64>>>,
    /// Set on every count, cleared when the counts are sent: an idle router sends nothing.
    dirty: AtomicBool,
}

impl RouteCounters {
    pub(crate) fn record(
        &self,
        migration: &str,
        op: RouteOp,
        phase: Phase,
        path: &'static str,
        reason: &'static str,
    ) {
        metrics::counter!(
            "ferry_route_decisions_total",
            "migration" => migration.to_owned(),
            "operation" => op.as_str(),
            "phase" => phase.as_str(),
            "path" => path,
            "reason" => reason,
        )
        .increment(1);
        let mut all = self
            .by_migration
            .lock()
            .expect("counter updates cannot panic while holding the lock");
        let counts = match all.get_mut(migration) {
            Some(counts) => counts,
            None => all.entry(migration.to_owned()).or_default(),
        };
        *counts.entry((op, phase, path, reason)).or_default() += 1;
        self.dirty.store(true, Ordering::Release);
    }

    /// Every count, sorted (stable output for the API and tests).
    pub(crate) fn snapshot(&self) -> Vec<RouteCount> {
        let all = self
            .by_migration
            .lock()
            .expect("counter updates cannot panic while holding the lock");
        let mut out: Vec<RouteCount> = all
            .iter()
            .flat_map(|(migration, counts)| {
                counts
                    .iter()
                    .map(move |(&(op, phase, path, reason), &count)| RouteCount {
                        migration: migration.clone(),
                        operation: op.as_str().to_owned(),
                        phase: phase.as_str().to_owned(),
                        path: path.to_owned(),
                        reason: reason.to_owned(),
                        count,
                    })
            })
            .collect();
        out.sort();
        out
    }

    /// The counts if anything was counted since the last call that returned some.
    pub(crate) fn take_changed(&self) -> Option<Vec<RouteCount>> {
        self.dirty
            .swap(false, Ordering::AcqRel)
            .then(|| self.snapshot())
    }

    /// Sending failed: send again next time.
    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}
