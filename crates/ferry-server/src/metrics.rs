//! `/metrics` in the Prometheus text format: gauges read from the control store at scrape time
//! (so every `ferry serve` answers the same, and nothing is lost with a restart), followed by
//! this process's own counters (HTTP requests, phase changes made through it, route decisions
//! of any router embedded in it).
//!
//! Labels are migration, phase, state and cause: never a tenant id or a key. Per-tenant detail
//! is in the API.

use std::fmt::Write as _;
use std::sync::OnceLock;

use chrono::Utc;
use ferry_api::{MigrationStatus, Status};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the process-wide Prometheus recorder once and returns its handle (later calls,
/// e.g. a second server in one test binary, get the same handle).
pub fn recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(e) => {
                    tracing::warn!("another metrics recorder is installed; /metrics shows only the control store's gauges: {e}");
                    None
                }
            }
        })
        .clone()
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A gauge with one sample per migration.
type PerMigration = (&'static str, &'static str, fn(&MigrationStatus) -> f64);

/// A gauge with one sample per migration and state.
type PerState = (
    &'static str,
    &'static str,
    fn(&MigrationStatus) -> Vec<(&'static str, f64)>,
);

const PER_MIGRATION: &[PerMigration] = &[
    (
        "ferry_tenants_paused",
        "Paused tenants per migration.",
        |m| m.paused as f64,
    ),
    (
        "ferry_update_buffer_retrying_changes",
        "Pending changes that have failed at least once.",
        |m| m.buffer.retrying as f64,
    ),
    (
        "ferry_update_buffer_failed_attempts",
        "Failed apply attempts, summed over open changes.",
        |m| m.buffer.attempts as f64,
    ),
    (
        "ferry_update_buffer_oldest_pending_age_seconds",
        "Age of the oldest pending change (0 when none is pending).",
        |m| {
            m.buffer.oldest_pending_at.map_or(0.0, |at| {
                (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
            })
        },
    ),
    (
        "ferry_backfill_rows_done",
        "Rows copied, summed over tenants.",
        |m| m.copies.rows_done as f64,
    ),
    (
        "ferry_backfill_rows_estimated",
        "Rows to copy (estimated when each copy started), summed over tenants.",
        |m| m.copies.rows_total as f64,
    ),
    (
        "ferry_backfill_rows_per_second",
        "The copiers' current rate, summed over running copies.",
        |m| m.copies.rows_per_s,
    ),
];

const PER_STATE: &[PerState] = &[
    (
        "ferry_update_buffer_changes",
        "Open update-buffer changes: pending (waiting to be applied) or dead (waiting for an operator).",
        |m| {
            vec![
                ("pending", m.buffer.pending as f64),
                ("dead", m.buffer.dead as f64),
            ]
        },
    ),
    (
        "ferry_validation_mismatches",
        "Validation mismatches recorded, open (blocking the tenant) or resolved.",
        |m| {
            vec![
                ("open", m.mismatches.open as f64),
                ("resolved", (m.mismatches.total - m.mismatches.open) as f64),
            ]
        },
    ),
    (
        "ferry_backfill_copies",
        "Tenant copies (backfills and reverse syncs), running or complete.",
        |m| {
            vec![
                ("running", m.copies.running as f64),
                ("complete", m.copies.complete as f64),
            ]
        },
    ),
];

/// The control store's state as gauges.
pub fn render_status(status: &Status) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let ms = &status.migrations;

    f.header("ferry_tenants", "gauge", "Tenants per migration and phase.");
    for m in ms {
        for p in &m.phases {
            f.sample(
                "ferry_tenants",
                &[("migration", &m.migration), ("phase", &p.phase)],
                p.tenants as f64,
            );
        }
    }
    for (name, help, value) in PER_MIGRATION {
        f.header(name, "gauge", help);
        for m in ms {
            f.sample(name, &[("migration", &m.migration)], value(m));
        }
    }
    for (name, help, values) in PER_STATE {
        f.header(name, "gauge", help);
        for m in ms {
            for (state, v) in values(m) {
                f.sample(name, &[("migration", &m.migration), ("state", state)], v);
            }
        }
    }
    f.header(
        "ferry_backfill_throttled_copies",
        "gauge",
        "Running copies held back or slowed, by the signal that did it.",
    );
    for m in ms {
        for t in &m.copies.throttled {
            f.sample(
                "ferry_backfill_throttled_copies",
                &[("migration", &m.migration), ("cause", &t.cause)],
                t.tenants as f64,
            );
        }
    }
    f.header(
        "ferry_routers",
        "gauge",
        "Registered routers: live (heartbeat within the lease) or presumed dead.",
    );
    let live = status.routers.iter().filter(|r| r.live).count();
    f.sample("ferry_routers", &[("state", "live")], live as f64);
    f.sample(
        "ferry_routers",
        &[("state", "dead")],
        (status.routers.len() - live) as f64,
    );
    f.header(
        "ferry_change_version",
        "gauge",
        "The control store's change counter (one step per phase-change transaction).",
    );
    f.sample("ferry_change_version", &[], status.change_version as f64);
    out
}
