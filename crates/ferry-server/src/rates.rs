//! A short history of the status, sampled on a timer, so the dashboard can chart rates over
//! the last minutes as soon as it opens (rates are differences between samples, worked out by
//! the page).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use ferry_api::Status;
use serde::Serialize;

/// Samples kept: at the default 5 s, ten minutes.
pub const KEEP: usize = 120;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub at: DateTime<Utc>,
    pub migrations: Vec<MigrationSample>,
}

/// Cumulative figures of one migration at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationSample {
    pub migration: String,
    /// Operations routed so far, by path (summed over operations, phases and reasons;
    /// fallback decisions are in `fallbacks`).
    pub routed: BTreeMap<String, u64>,
    pub fallbacks: u64,
    pub rows_copied: u64,
    pub buffer_pending: u64,
    pub buffer_dead: u64,
    pub mismatches_open: u64,
    /// Tenants per phase.
    pub phases: BTreeMap<String, u64>,
}

#[derive(Default)]
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

impl Rates {
    pub fn record(&self, status: &Status) {
        let sample = Sample {
            at: Utc::now(),
            migrations: status
                .migrations
                .iter()
                .map(|m| MigrationSample {
                    migration: m.migration.clone(),
                    routed: m
                        .routed_by_path()
                        .into_iter()
                        .map(|(path, n)| (path.to_owned(), n))
                        .collect(),
                    fallbacks: m.fallbacks,
                    rows_copied: m.copies.rows_done,
                    buffer_pending: m.buffer.pending,
                    buffer_dead: m.buffer.dead,
                    mismatches_open: m.mismatches.open,
                    phases: m
                        .phases
                        .iter()
                        .map(|p| (p.phase.clone(), p.tenants))
                        .collect(),
                })
                .collect(),
        };
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        samples.push_back(sample);
        while samples.len() > KEEP {
            samples.pop_front();
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}
