//! [`RowBudget`]: at most so many profiled rows per second per model version (a token bucket
//! with one second of burst), so that profiling costs the data path little at any load.
//!
//! What a cap costs a drift test: a window's live sketches hold up to 1024 rows exactly and
//! answer CDF queries within the KLL rank error beyond (k = 1024: σ ≈ 0.11 %), so a window's
//! KS statistic is at best as precise as that of ~224 000 exact rows (see the monitor's
//! `drift/sketch.rs`, effective sample sizes). At the default 2 000 rows/s a 5 s worker window
//! holds up to 10 000 rows (effective ≈ 9 600), and the monitor merges every worker's: the cap
//! gives up precision only beyond windows of thousands of rows, where a 0.5-std shift is
//! detected from 200 (the monitor's `tests/drift_false_alarms.rs`). Rows are taken as the
//! bucket refills, i.e. spread evenly over time; request counts, errors and latency still
//! cover every request.

use std::sync::Mutex;
use std::time::Instant;

/// A token bucket of rows.
#[derive(Debug)]
pub struct RowBudget {
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl RowBudget {
    /// A budget of `per_sec` rows per second; 0 means unlimited (`None`).
    pub fn new(per_sec: u64) -> Option<Self> {
        (per_sec > 0).then(|| Self {
            per_sec: per_sec as f64,
            state: Mutex::new((per_sec as f64, Instant::now())),
        })
    }

    /// Whether a request of `rows` rows may be profiled now (it then spends `rows` tokens; a
    /// request larger than the burst goes through once the bucket is full, leaving a debt).
    pub fn take(&self, rows: usize) -> bool {
        self.take_at(rows, Instant::now())
    }

    fn take_at(&self, rows: usize, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *s;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.per_sec)
            .min(self.per_sec);
        let rows = rows as f64;
        if tokens >= rows.min(self.per_sec) {
            *s = (tokens - rows, now);
            true
        } else {
            *s = (tokens, now);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn caps_rows_per_second_with_a_one_second_burst() {
        let b = RowBudget::new(1000).unwrap();
        let t0 = Instant::now();
        // The first second's burst: 1000 rows, then nothing until it refills.
        let taken = (0..200).filter(|_| b.take_at(8, t0)).count();
        assert_eq!(taken, 125);
        assert!(!b.take_at(8, t0 + Duration::from_millis(5)));
        assert!(b.take_at(8, t0 + Duration::from_millis(10)));
        // Over 10 s of 8-row requests every ms, about 1000 rows/s go through.
        let mut rows = 0;
        for ms in 11..10_011 {
            if b.take_at(8, t0 + Duration::from_millis(ms)) {
                rows += 8;
            }
        }
        assert!((9_900..=10_100).contains(&rows), "{rows}");
        assert!(RowBudget::new(0).is_none());
    }

    #[test]
    fn a_batch_larger_than_the_burst_passes_on_a_full_bucket() {
        let b = RowBudget::new(100).unwrap();
        let t0 = Instant::now();
        assert!(b.take_at(500, t0));
        // It left a debt: the next second takes nothing.
        assert!(!b.take_at(1, t0 + Duration::from_millis(900)));
        assert!(b.take_at(500, t0 + Duration::from_secs(6)));
    }
}
