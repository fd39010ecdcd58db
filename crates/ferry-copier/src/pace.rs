//! The pace controller (RFC 001): keeps a live load's latency near what it was before the copy
//! started, by adapting a rows/s limit shared by every tenant being copied.
//!
//! The absolute thresholds of `backpressure.rs` protect a database from falling over; they
//! do not notice a load whose latency merely doubles. Here, a baseline probe latency is taken
//! before the first batch (the median of a few probes: what the application sees under its
//! own load). While a probe stays under `max(baseline × latency_factor, baseline +
//! latency_floor_ms)` the limit grows additively; when it goes over, the limit halves (AIMD),
//! never below `min_rows_per_s`, so the copy always progresses.

use std::sync::Mutex;
use std::time::Duration;

use crate::config::BackpressureSettings;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    pub source: Duration,
    pub target: Duration,
}

#[derive(Debug, Default)]
struct State {
    baseline: Option<Baseline>,
    /// Rows per second for the whole copy, or `None` before the first signal.
    limit: Option<f64>,
    /// The last reason the limit was cut, for the throttle state.
    reason: Option<String>,
    /// Cuts since the last calm probe, and calm probes since the last cut.
    cuts_in_a_row: u32,
    calm_in_a_row: u32,
    /// Tenants taken off the number copied at once (step 4): one per two cuts in a row, one
    /// given back per [`GROW_AFTER`] calm probes in a row.
    fewer_tenants: usize,
}

/// Cuts in a row that take one tenant off the number copied at once.
pub const SHRINK_AFTER: u32 = 2;
/// Calm probes in a row that give one back.
pub const GROW_AFTER: u32 = 4;

#[derive(Debug, Default)]
pub struct Pace {
    state: Mutex<State>,
}

/// The median of some probe times.
pub fn median(mut probes: Vec<Duration>) -> Duration {
    probes.sort();
    probes.get(probes.len() / 2).copied().unwrap_or_default()
}

impl Pace {
    pub fn baseline(&self) -> Option<Baseline> {
        self.state.lock().ok().and_then(|s| s.baseline)
    }

    /// How many tenants to copy at once, out of `parallel`: concurrency follows the rate
    /// (RFC 001, step 4), never below one.
    pub fn concurrency(&self, parallel: usize) -> usize {
        let fewer = self.state.lock().map(|s| s.fewer_tenants).unwrap_or(0);
        parallel.saturating_sub(fewer).max(1)
    }

    pub fn set_baseline(&self, baseline: Baseline) {
        if let Ok(mut s) = self.state.lock() {
            s.baseline.get_or_insert(baseline);
        }
    }

    /// Adjusts the limit from the latest probes; `observed` is the copy's current rows/s
    /// (where the first cut starts from). Returns the limit and, if latency is over the
    /// baseline's allowance, why.
    pub fn observe(
        &self,
        settings: &BackpressureSettings,
        source: Duration,
        target: Duration,
        observed: f64,
    ) -> (Option<f64>, Option<String>) {
        let Ok(mut s) = self.state.lock() else {
            return (None, None);
        };
        let Some(base) = s.baseline else {
            return (s.limit, None);
        };
        if settings.latency_factor <= 0.0 {
            return (None, None);
        }
        let allowance = |b: Duration| {
            b.mul_f64(settings.latency_factor)
                .max(b + Duration::from_millis(settings.latency_floor_ms))
        };
        let over = [
            ("source", source, base.source),
            ("target", target, base.target),
        ]
        .into_iter()
        .find(|(_, now, b)| *now > allowance(*b));
        let floor = settings.min_rows_per_s.max(1) as f64;
        match over {
            // Nothing copied yet: no rate to halve (halving "nothing" pinned the pace to its
            // floor before the first batch, and the copy crawled from there).
            Some(_) if s.limit.is_none() && observed <= 0.0 => (None, None),
            Some((side, now, b)) => {
                let from = s.limit.unwrap_or(observed.max(floor));
                let limit = (from / 2.0).max(floor);
                s.limit = Some(limit);
                s.calm_in_a_row = 0;
                s.cuts_in_a_row += 1;
                if s.cuts_in_a_row >= SHRINK_AFTER {
                    s.cuts_in_a_row = 0;
                    s.fewer_tenants += 1;
                }
                s.reason = Some(format!(
                    "{side} latency {:.1}ms is {:.1}x its {:.1}ms baseline: pace {:.0} rows/s",
                    now.as_secs_f64() * 1e3,
                    now.as_secs_f64() / b.as_secs_f64().max(1e-6),
                    b.as_secs_f64() * 1e3,
                    limit
                ));
                (s.limit, s.reason.clone())
            }
            None => {
                if let Some(limit) = s.limit {
                    s.limit = Some(limit + settings.pace_step_rows_per_s as f64);
                }
                s.cuts_in_a_row = 0;
                s.calm_in_a_row += 1;
                if s.calm_in_a_row >= GROW_AFTER && s.fewer_tenants > 0 {
                    s.calm_in_a_row = 0;
                    s.fewer_tenants -= 1;
                }
                (s.limit, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn latency_over_the_baseline_halves_the_pace_and_calm_grows_it_back() {
        let settings = BackpressureSettings {
            latency_factor: 2.0,
            latency_floor_ms: 2,
            min_rows_per_s: 200,
            pace_step_rows_per_s: 1_000,
            ..BackpressureSettings::default()
        };
        let pace = Pace::default();
        assert_eq!(
            pace.observe(&settings, ms(90), ms(90), 10_000.0),
            (None, None),
            "no baseline yet"
        );
        pace.set_baseline(Baseline {
            source: ms(1),
            target: ms(1),
        });
        // Within max(2 × 1ms, 1ms + 2ms) = 3ms: no limit.
        assert_eq!(pace.observe(&settings, ms(2), ms(3), 10_000.0).0, None);
        let (limit, why) = pace.observe(&settings, ms(8), ms(1), 10_000.0);
        assert_eq!(limit, Some(5_000.0));
        assert!(
            why.unwrap()
                .starts_with("source latency 8.0ms is 8.0x its 1.0ms baseline")
        );
        assert_eq!(
            pace.observe(&settings, ms(1), ms(9), 10_000.0).0,
            Some(2_500.0)
        );
        let calm = pace.observe(&settings, ms(1), ms(1), 10_000.0).0.unwrap();
        assert_eq!(calm, 2_500.0 + settings.pace_step_rows_per_s as f64);
        // Never below the floor.
        for _ in 0..40 {
            pace.observe(&settings, ms(50), ms(50), 10_000.0);
        }
        assert_eq!(
            pace.observe(&settings, ms(50), ms(50), 10_000.0).0,
            Some(settings.min_rows_per_s as f64)
        );
    }

    #[test]
    fn nothing_copied_yet_is_not_halved_to_the_floor() {
        let settings = BackpressureSettings {
            latency_factor: 1.5,
            latency_floor_ms: 1,
            min_rows_per_s: 200,
            ..BackpressureSettings::default()
        };
        let pace = Pace::default();
        pace.set_baseline(Baseline {
            source: ms(1),
            target: ms(1),
        });
        for _ in 0..5 {
            assert_eq!(pace.observe(&settings, ms(20), ms(20), 0.0).0, None);
        }
        // Once a rate is observed, it is what gets halved.
        assert_eq!(
            pace.observe(&settings, ms(20), ms(20), 8_000.0).0,
            Some(4_000.0)
        );
    }

    #[test]
    fn a_zero_factor_turns_the_controller_off() {
        let settings = BackpressureSettings {
            latency_factor: 0.0,
            ..BackpressureSettings::default()
        };
        let pace = Pace::default();
        pace.set_baseline(Baseline {
            source: ms(1),
            target: ms(1),
        });
        assert_eq!(pace.observe(&settings, ms(500), ms(500), 1.0), (None, None));
    }

    #[test]
    fn concurrency_shrinks_after_two_cuts_in_a_row_and_grows_back_when_calm() {
        let settings = BackpressureSettings {
            latency_factor: 2.0,
            latency_floor_ms: 1,
            ..BackpressureSettings::default()
        };
        let pace = Pace::default();
        pace.set_baseline(Baseline {
            source: ms(1),
            target: ms(1),
        });
        assert_eq!(pace.concurrency(3), 3);
        pace.observe(&settings, ms(20), ms(1), 9_000.0);
        assert_eq!(pace.concurrency(3), 3, "one cut is not a trend");
        pace.observe(&settings, ms(1), ms(1), 9_000.0);
        pace.observe(&settings, ms(20), ms(1), 9_000.0);
        assert_eq!(
            pace.concurrency(3),
            3,
            "a calm probe in between resets the count"
        );
        pace.observe(&settings, ms(20), ms(1), 9_000.0);
        assert_eq!(pace.concurrency(3), 2);
        for _ in 0..10 {
            pace.observe(&settings, ms(20), ms(1), 9_000.0);
        }
        assert_eq!(pace.concurrency(3), 1, "one tenant at a time is the floor");
        for _ in 0..GROW_AFTER {
            pace.observe(&settings, ms(1), ms(1), 9_000.0);
        }
        assert_eq!(
            pace.concurrency(3),
            1,
            "taken off six times, given back once"
        );
        for _ in 0..(GROW_AFTER * 6) {
            pace.observe(&settings, ms(1), ms(1), 9_000.0);
        }
        assert_eq!(pace.concurrency(3), 3, "calm gives every tenant back");
    }

    #[test]
    fn the_baseline_is_the_median() {
        assert_eq!(median(vec![ms(9), ms(1), ms(2), ms(3), ms(2)]), ms(2));
    }
}
