//! The order and overlap of many tenants' copies.
//!
//! Largest first, so the long copies overlap each other instead of one of them running alone
//! at the end; and while at most `parallel` large copies run (each keeps a database core
//! busy), small ones — a batch or two, whose time is mostly round trips — fill up to
//! `parallel * SMALL_OVERLAP` slots, smallest first from the other end of the queue.
//! Measured on 2 cores with 1,000 skewed tenants: sequential order at 2 at a time kept the
//! copy at 0.49 of the `INSERT … SELECT` ceiling, this schedule at 0.6–0.7 (docs/benchmarks.md).

use std::collections::{HashSet, VecDeque};

use ferry_domain::TenantId;

/// How many small copies may run per large-copy slot.
pub const SMALL_OVERLAP: usize = 4;

/// Large copies at once unless the operator says otherwise (`ferry copy run --parallel`, and
/// `ferry bench copy`, which measures what `copy run` does): two busy connections on the
/// source. On the 2-core machines measured, 2 was the fastest (4 queued behind each other, 15%
/// slower), and the pace controller holds both back under live load, so 2 is also safe on a
/// live primary. Raise it towards the database's core count when it has room.
pub const DEFAULT_PARALLEL: usize = 2;

#[derive(Debug)]
pub struct Schedule {
    /// Largest first.
    queue: VecDeque<(TenantId, u64)>,
    parallel: usize,
    small_rows: u64,
    running_large: HashSet<TenantId>,
    running: usize,
}

impl Schedule {
    /// `tenants` with their (estimated) rows; a tenant of at most `small_rows` rows is small.
    pub fn new(mut tenants: Vec<(TenantId, u64)>, parallel: usize, small_rows: u64) -> Schedule {
        tenants.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Schedule {
            queue: tenants.into(),
            parallel: parallel.max(1),
            small_rows,
            running_large: HashSet::new(),
            running: 0,
        }
    }

    /// The next tenant to start now, if one may start; call until `None`, then again after
    /// each [`Schedule::finished`].
    pub fn start_next(&mut self) -> Option<TenantId> {
        let limit = self.parallel * SMALL_OVERLAP;
        if self.running >= limit {
            return None;
        }
        let front_large = self.queue.front().is_some_and(|t| t.1 > self.small_rows);
        if front_large && self.running_large.len() < self.parallel {
            let (tenant, _) = self.queue.pop_front()?;
            self.running_large.insert(tenant.clone());
            self.running += 1;
            return Some(tenant);
        }
        if self.queue.back().is_some_and(|t| t.1 <= self.small_rows) {
            let (tenant, _) = self.queue.pop_back()?;
            self.running += 1;
            return Some(tenant);
        }
        None
    }

    /// Changes how many large copies may run at once (the pace controller's concurrency):
    /// copies already running above it finish; no new one starts until they have.
    pub fn set_parallel(&mut self, parallel: usize) {
        self.parallel = parallel.max(1);
    }

    pub fn finished(&mut self, tenant: &TenantId) {
        self.running_large.remove(tenant);
        self.running = self.running.saturating_sub(1);
    }

    /// Nothing left to start.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::new(s).expect("valid")
    }

    #[test]
    fn large_copies_start_first_and_small_ones_fill_the_other_slots() {
        let tenants = vec![
            (t("s1"), 10),
            (t("big2"), 50_000),
            (t("s2"), 20),
            (t("big1"), 90_000),
            (t("big3"), 30_000),
            (t("s3"), 5),
        ];
        let mut s = Schedule::new(tenants, 2, 1_000);
        let mut started = vec![];
        while let Some(next) = s.start_next() {
            started.push(next.to_string());
        }
        // Two large (the largest), then small ones smallest first, up to 2 * 4 in all.
        assert_eq!(started, ["big1", "big2", "s3", "s1", "s2"]);
        // The third large one waits for a large slot, not just any slot.
        assert_eq!(s.start_next(), None);
        s.finished(&t("s1"));
        assert_eq!(s.start_next(), None);
        s.finished(&t("big1"));
        assert_eq!(s.start_next().map(|t| t.to_string()), Some("big3".into()));
        assert!(s.is_empty());
    }

    #[test]
    fn a_lower_parallel_starts_no_large_copy_until_enough_finished() {
        let tenants: Vec<(TenantId, u64)> = (0..4)
            .map(|i| (t(&format!("big{i}")), 10_000 - i))
            .collect();
        let mut s = Schedule::new(tenants, 2, 100);
        assert_eq!(s.start_next().map(|t| t.to_string()), Some("big0".into()));
        assert_eq!(s.start_next().map(|t| t.to_string()), Some("big1".into()));
        s.set_parallel(1);
        s.finished(&t("big0"));
        assert_eq!(s.start_next(), None, "big1 still runs: one at a time now");
        s.finished(&t("big1"));
        assert_eq!(s.start_next().map(|t| t.to_string()), Some("big2".into()));
        s.set_parallel(2);
        assert_eq!(s.start_next().map(|t| t.to_string()), Some("big3".into()));
    }

    #[test]
    fn small_copies_are_capped_and_every_tenant_starts_once() {
        let tenants: Vec<(TenantId, u64)> = (0..30).map(|i| (t(&format!("t{i}")), i)).collect();
        let mut s = Schedule::new(tenants, 1, 100);
        let mut seen = HashSet::new();
        let mut running = vec![];
        while !s.is_empty() || !running.is_empty() {
            while let Some(next) = s.start_next() {
                assert!(seen.insert(next.clone()), "{next} started twice");
                running.push(next);
            }
            assert!(running.len() <= SMALL_OVERLAP);
            let done = running.remove(0);
            s.finished(&done);
        }
        assert_eq!(seen.len(), 30);
    }
}
