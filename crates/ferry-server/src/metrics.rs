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
use ferry_api::Status;
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
    f.header(
        "ferry_tenants_paused",
        "gauge",
        "Paused tenants per migration.",
    );
    for m in ms {
        f.sample(
            "ferry_tenants_paused",
            &[("migration", &m.migration)],
            m.paused as f64,
        );
    }
    f.header(
        "ferry_update_buffer_changes",
        "gauge",
        "Open update-buffer changes: pending (waiting to be applied) or dead (waiting for an operator).",
    );
    for m in ms {
        for (state, n) in [("pending", m.buffer.pending), ("dead", m.buffer.dead)] {
            f.sample(
                "ferry_update_buffer_changes",
                &[("migration", &m.migration), ("state", state)],
                n as f64,
            );
        }
    }
    f.header(
        "ferry_update_buffer_retrying_changes",
        "gauge",
        "Pending changes that have failed at least once.",
    );
    for m in ms {
        f.sample(
            "ferry_update_buffer_retrying_changes",
            &[("migration", &m.migration)],
            m.buffer.retrying as f64,
        );
    }
    f.header(
        "ferry_update_buffer_failed_attempts",
        "gauge",
        "Failed apply attempts, summed over open changes.",
    );
    for m in ms {
        f.sample(
            "ferry_update_buffer_failed_attempts",
            &[("migration", &m.migration)],
            m.buffer.attempts as f64,
        );
    }
    f.header(
        "ferry_update_buffer_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest pending change (0 when none is pending).",
    );
    let now = Utc::now();
    for m in ms {
        let age = m.buffer.oldest_pending_at.map_or(0.0, |at| {
            (now - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        f.sample(
            "ferry_update_buffer_oldest_pending_age_seconds",
            &[("migration", &m.migration)],
            age,
        );
    }
    f.header(
        "ferry_validation_mismatches",
        "gauge",
        "Validation mismatches recorded, open (blocking the tenant) or resolved.",
    );
    for m in ms {
        for (state, n) in [
            ("open", m.mismatches.open),
            ("resolved", m.mismatches.total - m.mismatches.open),
        ] {
            f.sample(
                "ferry_validation_mismatches",
                &[("migration", &m.migration), ("state", state)],
                n as f64,
            );
        }
    }
    f.header(
        "ferry_backfill_copies",
        "gauge",
        "Tenant copies (backfills and reverse syncs), running or complete.",
    );
    for m in ms {
        for (state, n) in [
            ("running", m.copies.running),
            ("complete", m.copies.complete),
        ] {
            f.sample(
                "ferry_backfill_copies",
                &[("migration", &m.migration), ("state", state)],
                n as f64,
            );
        }
    }
    f.header(
        "ferry_backfill_rows_done",
        "gauge",
        "Rows copied, summed over tenants.",
    );
    for m in ms {
        f.sample(
            "ferry_backfill_rows_done",
            &[("migration", &m.migration)],
            m.copies.rows_done as f64,
        );
    }
    f.header(
        "ferry_backfill_rows_estimated",
        "gauge",
        "Rows to copy (estimated when each copy started), summed over tenants.",
    );
    for m in ms {
        f.sample(
            "ferry_backfill_rows_estimated",
            &[("migration", &m.migration)],
            m.copies.rows_total as f64,
        );
    }
    f.header(
        "ferry_backfill_rows_per_second",
        "gauge",
        "The copiers' current rate, summed over running copies.",
    );
    for m in ms {
        f.sample(
            "ferry_backfill_rows_per_second",
            &[("migration", &m.migration)],
            m.copies.rows_per_s,
        );
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
