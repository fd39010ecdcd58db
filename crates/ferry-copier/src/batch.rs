//! Adaptive batch size: aim each batch at a target duration.

use std::time::Duration;

/// Starts small and moves the batch size towards the size that takes `target`, within
/// `[min, max]`. Each step moves halfway, and at most doubles or halves, so one outlier (a
/// checkpoint flush, a cold cache) does not swing the size.
#[derive(Debug, Clone)]
pub struct BatchSizer {
    size: u64,
    min: u64,
    max: u64,
    target: Duration,
}

impl BatchSizer {
    pub fn new(start: u64, min: u64, max: u64, target: Duration) -> BatchSizer {
        BatchSizer {
            size: start.clamp(min, max),
            min,
            max,
            target,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Learns from a full batch of `rows` that took `took`; returns the next size.
    pub fn observe(&mut self, rows: u64, took: Duration) -> u64 {
        // A short final batch says nothing about how long a full one takes.
        if rows < self.size || took.is_zero() {
            return self.size;
        }
        let ratio = (self.target.as_secs_f64() / took.as_secs_f64()).clamp(0.5, 2.0);
        let ideal = self.size as f64 * ratio;
        let next = (self.size as f64 + ideal) / 2.0;
        self.size = (next.round() as u64).clamp(self.min, self.max);
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn grows_when_fast_and_shrinks_when_slow() {
        let mut s = BatchSizer::new(500, 100, 5000, ms(500));
        // 500 rows in 100 ms: five times too fast; grows by at most 2x per step, halfway.
        assert_eq!(s.observe(500, ms(100)), 750);
        assert_eq!(s.observe(750, ms(150)), 1125);
        // Then slow: 1125 rows in 2 s.
        assert_eq!(s.observe(1125, ms(2000)), 844);
    }

    #[test]
    fn converges_to_the_target_and_stays_in_bounds() {
        // A database that copies 4 rows per millisecond: 2000 rows make a 500 ms batch.
        let mut s = BatchSizer::new(500, 500, 2000, ms(500));
        for _ in 0..30 {
            let took = ms(s.size() / 4);
            s.observe(s.size(), took);
        }
        assert_eq!(s.size(), 2000);
        let mut s = BatchSizer::new(500, 500, 2000, ms(500));
        for _ in 0..30 {
            s.observe(s.size(), ms(10_000));
        }
        assert_eq!(s.size(), 500, "never below min");
    }

    #[test]
    fn partial_batches_do_not_move_it() {
        let mut s = BatchSizer::new(1000, 100, 5000, ms(500));
        assert_eq!(s.observe(10, ms(1)), 1000);
    }
}
