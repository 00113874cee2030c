//! perf_analyzer's stability rule: the measured window is cut into fixed windows (`--window`,
//! by completion time); after each one closes, the last `N` (`--stability-windows`) are stable
//! when each one's throughput (OK answers per second) and latency percentile (p99 by default)
//! lie within ±`tolerance` (`--stability 10%`) of those `N` windows' mean. The measurement ends
//! at the first stable window boundary, or after `max_windows` (`--max-windows`) unstable.
//!
//! The run's [`crate::Report`] still covers the whole measured window; its `stability` field
//! ([`StabilityReport`]) lists every window and the merged figures of the last `N` (what an
//! SLO search judges, as perf_analyzer reports its stable windows).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::load::Window;
use crate::record::latency_histogram;

/// When a level's measurement is stable enough to stop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stability {
    /// Windows that must agree (`N`, perf_analyzer's `-s`/stability window count is 3).
    pub windows: usize,
    /// Length of one window.
    #[serde(with = "secs")]
    pub window: Duration,
    /// Largest allowed relative deviation from the mean (0.1 = ±10 %).
    pub tolerance: f64,
    /// Windows after which an unstable measurement ends anyway.
    pub max_windows: usize,
    /// The latency quantile checked (0.99; 0.5 for p50).
    pub quantile: f64,
}

impl Default for Stability {
    fn default() -> Self {
        Self {
            windows: 3,
            window: Duration::from_secs(2),
            tolerance: 0.1,
            max_windows: 10,
            quantile: 0.99,
        }
    }
}

impl Stability {
    /// Checks the numbers make sense.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.windows >= 1, "stability-windows must be at least 1");
        anyhow::ensure!(!self.window.is_zero(), "window must be > 0");
        anyhow::ensure!(
            self.tolerance.is_finite() && self.tolerance >= 0.0,
            "stability must be a fraction >= 0"
        );
        anyhow::ensure!(
            self.max_windows >= self.windows,
            "max-windows must be at least stability-windows"
        );
        anyhow::ensure!(
            self.quantile > 0.0 && self.quantile <= 1.0,
            "the stability quantile must be in (0, 1]"
        );
        Ok(())
    }

    /// The longest the measurement can last.
    pub fn limit(&self) -> Duration {
        self.window * self.max_windows as u32
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// One closed window's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// OK answers per second.
    pub throughput_rps: f64,
    /// The checked latency quantile of the window's OK answers, µs (`None`: no OK answer).
    pub latency_us: Option<u64>,
}

/// How a level's measurement ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StabilityReport {
    /// The rule applied.
    pub rule: Stability,
    /// Whether the last `N` windows agreed (false: stopped at `max_windows`).
    pub stable: bool,
    /// Every closed window, in order.
    pub windows: Vec<WindowStats>,
    /// Throughput of the last `N` windows together, OK answers per second.
    pub throughput_rps: f64,
    /// The checked quantile over the last `N` windows together, µs (`None`: no OK answer).
    pub latency_us: Option<u64>,
}

/// Whether `windows` (the last `N`) are stable under `tolerance`.
pub fn is_stable(windows: &[WindowStats], tolerance: f64) -> bool {
    if windows.is_empty() {
        return false;
    }
    let Some(latencies) = windows
        .iter()
        .map(|w| w.latency_us.map(|l| l as f64))
        .collect::<Option<Vec<f64>>>()
    else {
        return false;
    };
    let throughputs: Vec<f64> = windows.iter().map(|w| w.throughput_rps).collect();
    within(&throughputs, tolerance) && within(&latencies, tolerance)
}

/// Whether every value is within ±`tolerance` of their mean.
fn within(values: &[f64], tolerance: f64) -> bool {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    values
        .iter()
        .all(|v| (v - mean).abs() <= tolerance * mean.abs() + f64::EPSILON)
}

#[derive(Debug, Default)]
struct Acc {
    ok: u64,
    latency: Option<Histogram<u64>>,
}

/// OK answers per window, by completion time, shared by the load tasks (one short lock per
/// OK answer).
#[derive(Debug)]
pub struct Tracker {
    origin: Instant,
    rule: Stability,
    windows: Mutex<Vec<Acc>>,
}

impl Tracker {
    /// A tracker whose window 0 starts at `origin` (the end of the warm-up).
    pub fn new(origin: Instant, rule: Stability) -> Self {
        Self {
            origin,
            rule,
            windows: Mutex::default(),
        }
    }

    /// Records an OK answer completed at `done` after `latency`.
    pub fn record_ok(&self, done: Instant, latency: Duration) {
        let Some(since) = done.checked_duration_since(self.origin) else {
            return;
        };
        let index = (since.as_nanos() / self.rule.window.as_nanos()) as usize;
        let mut windows = self.windows.lock().expect("tracker lock");
        if windows.len() <= index {
            windows.resize_with(index + 1, Acc::default);
        }
        let acc = &mut windows[index];
        acc.ok += 1;
        let hist = acc.latency.get_or_insert_with(latency_histogram);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if hist.record(us).is_err() {
            hist.saturating_record(us);
        }
    }

    /// The figures of windows `range` (closed ones), each alone.
    fn stats(&self, closed: usize) -> Vec<WindowStats> {
        let windows = self.windows.lock().expect("tracker lock");
        let secs = self.rule.window.as_secs_f64();
        (0..closed)
            .map(|i| match windows.get(i) {
                Some(acc) => WindowStats {
                    throughput_rps: acc.ok as f64 / secs,
                    latency_us: acc
                        .latency
                        .as_ref()
                        .map(|h| h.value_at_quantile(self.rule.quantile)),
                },
                None => WindowStats {
                    throughput_rps: 0.0,
                    latency_us: None,
                },
            })
            .collect()
    }

    /// The report after `closed` windows: every window, and the last `N` merged.
    fn report(&self, closed: usize, stable: bool) -> StabilityReport {
        let windows = self.stats(closed);
        let from = closed.saturating_sub(self.rule.windows);
        let accs = self.windows.lock().expect("tracker lock");
        let mut ok = 0;
        let mut merged = latency_histogram();
        for acc in accs.iter().take(closed).skip(from) {
            ok += acc.ok;
            if let Some(h) = &acc.latency {
                merged.add(h).expect("auto-resizing histograms merge");
            }
        }
        let span = self.rule.window.as_secs_f64() * (closed - from).max(1) as f64;
        StabilityReport {
            rule: self.rule,
            stable,
            windows,
            throughput_rps: (ok as f64 / span * 1e3).round() / 1e3,
            latency_us: (!merged.is_empty()).then(|| merged.value_at_quantile(self.rule.quantile)),
        }
    }
}

/// Watches `tracker` at every window boundary of `window`, ends the window (sets its end) at
/// the first stable boundary, and reports. Ends at `max_windows` otherwise.
pub async fn monitor(tracker: Arc<Tracker>, window: Arc<Window>) -> StabilityReport {
    let rule = tracker.rule;
    for closed in 1..=rule.max_windows {
        let boundary = tracker.origin + rule.window * closed as u32;
        tokio::time::sleep_until(boundary).await;
        if window.end().is_some_and(|end| end < boundary) {
            // Ended otherwise (a request budget): report what closed.
            return tracker.report(closed - 1, false);
        }
        let stats = tracker.stats(closed);
        if closed >= rule.windows && is_stable(&stats[closed - rule.windows..], rule.tolerance) {
            window.stop_at(boundary);
            return tracker.report(closed, true);
        }
    }
    tracker.report(rule.max_windows, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(throughput_rps: f64, latency_us: u64) -> WindowStats {
        WindowStats {
            throughput_rps,
            latency_us: Some(latency_us),
        }
    }

    #[test]
    fn perf_analyzers_rule() {
        assert!(is_stable(
            &[w(100.0, 1000), w(105.0, 1050), w(95.0, 950)],
            0.1
        ));
        assert!(!is_stable(
            &[w(100.0, 1000), w(130.0, 1000), w(95.0, 1000)],
            0.1
        ));
        assert!(!is_stable(
            &[w(100.0, 1000), w(100.0, 1500), w(100.0, 1000)],
            0.1
        ));
        let none = WindowStats {
            throughput_rps: 0.0,
            latency_us: None,
        };
        assert!(
            !is_stable(&[w(1.0, 1), none], 0.5),
            "no answers: not stable"
        );
        assert!(!is_stable(&[], 0.1));
        assert!(
            is_stable(&[w(7.0, 3)], 0.0),
            "one window agrees with itself"
        );
    }

    #[test]
    fn tracker_buckets_by_completion_and_merges_the_last_n() {
        let t0 = Instant::now();
        let rule = Stability {
            windows: 2,
            window: Duration::from_secs(1),
            ..Stability::default()
        };
        let tracker = Tracker::new(t0, rule);
        let ms = Duration::from_millis;
        for i in 0..10 {
            tracker.record_ok(t0 + ms(100 * i), ms(1));
        }
        for i in 0..20 {
            tracker.record_ok(t0 + ms(1000 + 50 * i), ms(2));
        }
        tracker.record_ok(t0 + ms(2500), ms(4));
        let stats = tracker.stats(2);
        assert_eq!(stats[0].throughput_rps, 10.0);
        assert_eq!(stats[1].throughput_rps, 20.0);
        let report = tracker.report(3, false);
        assert_eq!(report.windows.len(), 3);
        assert_eq!(report.throughput_rps, 10.5, "(20 + 1) / 2 s");
        let p99 = report.latency_us.unwrap();
        assert!(
            (4000..4010).contains(&p99),
            "p99 of the last two windows: {p99}"
        );
    }
}
