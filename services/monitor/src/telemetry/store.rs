//! The in-memory store of live traffic profiles, keyed by (model, version, window start).
//!
//! Guarantees:
//! - Windows are aligned on the Unix epoch: a push for `[start, end)` lands in the window
//!   starting at `start - start % window_ms`, so pushes of every worker for the same period
//!   merge into one profile (KLL sketches, moments, category counts and HDR histograms merge
//!   without losing their stated accuracy).
//! - Bounded: at most `max_windows` windows per model version (the oldest window goes first; a
//!   push older than every kept window of a full version is dropped) and at most
//!   `max_versions` model versions (the least recently pushed version goes first).
//! - A push whose profile does not merge with the window's (different features or outputs) is
//!   refused as a whole and changes nothing.
//!
//! # Memory bound
//!
//! One window holds one merged [`ModelProfile`]: ≤ 29 KiB per numeric feature (KLL k = 1024;
//! a window of ≤ 1024 rows is held exactly, ≤ 8 KiB), ≤ 14 KiB per categorical feature or
//! label output, 26 KiB of HDR latency (see `kiln_telemetry::profile`). The store holds at
//! most `max_versions × max_windows` of them: with the defaults (64 versions, 60 windows) and
//! a 64-feature model with 2 outputs that is ≤ 64 × 60 × 1.9 MiB ≈ 7 GiB worst case, ~3 GiB
//! with windows of 10⁴ rows, ~1-2 GiB with windows of ≤ 1024 rows; size `--telemetry-versions`
//! and `--telemetry-windows` to the models served (10 versions × 60 windows ≈ 1.1 GiB worst
//! case).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use kiln_telemetry::profile::ModelProfile;

use crate::error::{Error, Result};

/// Live profiles of every model version, merged across workers per aligned window.
#[derive(Debug)]
pub struct ProfileStore {
    window_ms: u64,
    max_windows: usize,
    max_versions: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    versions: HashMap<(String, String), Version>,
    /// Push counter: the recency order of versions.
    clock: u64,
}

#[derive(Debug)]
struct Version {
    windows: BTreeMap<u64, ModelProfile>,
    last_push: u64,
}

/// The merge of a version's windows over a look-back.
#[derive(Debug, Clone)]
pub struct Merged {
    /// The merged profile.
    pub profile: ModelProfile,
    /// Start of the first window merged, Unix ms.
    pub start_ms: u64,
    /// End of the last window merged, Unix ms.
    pub end_ms: u64,
    /// Windows merged.
    pub windows: usize,
}

/// The traffic of one window of a model version (see [`ProfileStore::series`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowStats {
    /// Start of the window, Unix ms.
    pub start_ms: u64,
    /// Requests answered in the window.
    pub requests: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// Input rows profiled in the window.
    pub rows: u64,
    /// Latency percentiles in the window, ms (0 without requests).
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

impl WindowStats {
    /// Requests per second over a window of `window_ms`.
    pub fn throughput(&self, window_ms: u64) -> f64 {
        self.requests as f64 * 1000.0 / window_ms.max(1) as f64
    }

    /// Errors per second over a window of `window_ms`.
    pub fn error_rate_per_sec(&self, window_ms: u64) -> f64 {
        self.errors as f64 * 1000.0 / window_ms.max(1) as f64
    }
}

impl ProfileStore {
    /// A store of `window_ms`-long windows keeping `max_windows` per version and `max_versions`
    /// versions (each at least 1).
    pub fn new(window_ms: u64, max_windows: usize, max_versions: usize) -> Self {
        Self {
            window_ms: window_ms.max(1),
            max_windows: max_windows.max(1),
            max_versions: max_versions.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The window length, ms.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Start of the window holding `unix_ms`.
    pub fn align(&self, unix_ms: u64) -> u64 {
        unix_ms - unix_ms % self.window_ms
    }

    /// Merges `profile` (observed from `start_ms`) into its window.
    pub fn push(&self, start_ms: u64, profile: &ModelProfile) -> Result<()> {
        let start = self.align(start_ms);
        let mut inner = self.inner.lock().expect("profile store lock");
        inner.clock += 1;
        let clock = inner.clock;
        let key = (profile.model.clone(), profile.version.clone());
        if !inner.versions.contains_key(&key) && inner.versions.len() >= self.max_versions {
            let oldest = inner
                .versions
                .iter()
                .min_by_key(|(_, v)| v.last_push)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.versions.remove(&k);
            }
        }
        let version = inner.versions.entry(key).or_insert_with(|| Version {
            windows: BTreeMap::new(),
            last_push: clock,
        });
        match version.windows.get_mut(&start) {
            Some(window) => window
                .merge(profile)
                .map_err(|e| Error::InvalidArgument(format!("profile does not merge: {e}")))?,
            None => {
                if let Some((_, first)) = version.windows.iter().next() {
                    // Refuse a shape the version's other windows cannot merge with.
                    first.empty_like().merge(profile).map_err(|e| {
                        Error::InvalidArgument(format!("profile does not merge: {e}"))
                    })?;
                }
                version.windows.insert(start, profile.clone());
                while version.windows.len() > self.max_windows {
                    version.windows.pop_first();
                }
            }
        }
        version.last_push = clock;
        Ok(())
    }

    /// The merge of the windows of `model`/`version` that start at or after `since_ms`.
    pub fn merged(&self, model: &str, version: &str, since_ms: u64) -> Result<Option<Merged>> {
        self.merged_range(model, version, since_ms, u64::MAX)
    }

    /// The merge of the windows of `model`/`version` that start in `[since_ms, until_ms)`.
    pub fn merged_range(
        &self,
        model: &str,
        version: &str,
        since_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Merged>> {
        if until_ms <= self.align(since_ms) {
            return Ok(None);
        }
        let inner = self.inner.lock().expect("profile store lock");
        let Some(v) = inner
            .versions
            .get(&(model.to_string(), version.to_string()))
        else {
            return Ok(None);
        };
        let mut out: Option<Merged> = None;
        for (&start, p) in v.windows.range(self.align(since_ms)..until_ms) {
            match &mut out {
                None => {
                    out = Some(Merged {
                        profile: p.clone(),
                        start_ms: start,
                        end_ms: start + self.window_ms,
                        windows: 1,
                    })
                }
                Some(m) => {
                    m.profile
                        .merge(p)
                        .map_err(|e| Error::Internal(format!("merging windows: {e}")))?;
                    m.end_ms = start + self.window_ms;
                    m.windows += 1;
                }
            }
        }
        Ok(out)
    }

    /// The traffic of every kept window of `model`/`version`, oldest first (empty when the
    /// store holds none). Reads counts and latency percentiles only: the lock is held for a few
    /// histogram look-ups per window, no sketch is cloned or merged.
    pub fn series(&self, model: &str, version: &str) -> Vec<WindowStats> {
        let inner = self.inner.lock().expect("profile store lock");
        let Some(v) = inner
            .versions
            .get(&(model.to_string(), version.to_string()))
        else {
            return Vec::new();
        };
        v.windows
            .iter()
            .map(|(&start_ms, p)| {
                let lat = p.latency();
                let q = |q: f64| {
                    if lat.is_empty() {
                        0.0
                    } else {
                        lat.value_at_quantile(q) as f64 / 1000.0
                    }
                };
                WindowStats {
                    start_ms,
                    requests: p.request_count,
                    errors: p.error_count,
                    rows: p.row_count,
                    p50_ms: q(0.5),
                    p90_ms: q(0.9),
                    p99_ms: q(0.99),
                }
            })
            .collect()
    }

    /// The most recently pushed version of `model`, if any.
    pub fn latest_version(&self, model: &str) -> Option<String> {
        let inner = self.inner.lock().expect("profile store lock");
        inner
            .versions
            .iter()
            .filter(|((m, _), _)| m == model)
            .max_by_key(|(_, v)| v.last_push)
            .map(|((_, v), _)| v.clone())
    }

    /// (versions, windows) held.
    pub fn len(&self) -> (usize, usize) {
        let inner = self.inner.lock().expect("profile store lock");
        let windows = inner.versions.values().map(|v| v.windows.len()).sum();
        (inner.versions.len(), windows)
    }
}

#[cfg(test)]
mod tests {
    use kiln_telemetry::profile::ProfileSchema;

    use super::*;

    fn profile(version: &str, rows: usize, features: usize) -> ModelProfile {
        let mut p =
            ModelProfile::new("m", version, &ProfileSchema::numeric("x", features)).unwrap();
        for i in 0..rows {
            p.observe_row(&vec![i as f64; features]).unwrap();
        }
        p
    }

    #[test]
    fn merges_aligned_windows_and_bounds_them() {
        let s = ProfileStore::new(10_000, 3, 2);
        s.push(20_001, &profile("1", 5, 2)).unwrap();
        s.push(29_999, &profile("1", 7, 2)).unwrap();
        let m = s.merged("m", "1", 0).unwrap().unwrap();
        assert_eq!(
            (m.profile.row_count, m.windows, m.start_ms),
            (12, 1, 20_000)
        );
        for w in 3..8 {
            s.push(w * 10_000, &profile("1", 1, 2)).unwrap();
        }
        assert_eq!(s.len(), (1, 3));
        let m = s.merged("m", "1", 0).unwrap().unwrap();
        assert_eq!((m.start_ms, m.end_ms), (50_000, 80_000));
        assert_eq!(s.merged("m", "1", 70_000).unwrap().unwrap().windows, 1);
        assert!(s.push(80_000, &profile("1", 1, 3)).is_err());
        assert_eq!(s.len(), (1, 3));
    }

    #[test]
    fn series_reads_counts_and_latency_per_window() {
        let s = ProfileStore::new(10_000, 5, 2);
        assert!(s.series("m", "1").is_empty());
        let mut a = profile("1", 3, 1);
        for ms in [1, 2, 3, 100] {
            a.record_request(std::time::Duration::from_millis(ms), ms != 3);
        }
        s.push(20_000, &a).unwrap();
        s.push(10_000, &profile("1", 2, 1)).unwrap();
        let series = s.series("m", "1");
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].start_ms, 10_000);
        assert_eq!((series[0].requests, series[0].p99_ms), (0, 0.0));
        let w = series[1];
        assert_eq!(
            (w.start_ms, w.requests, w.errors, w.rows),
            (20_000, 4, 1, 3)
        );
        assert!((w.p50_ms - 2.0).abs() < 0.1, "{w:?}");
        assert!((w.p99_ms - 100.0).abs() < 1.0, "{w:?}");
        assert!((w.throughput(10_000) - 0.4).abs() < 1e-9);
        assert!((w.error_rate_per_sec(10_000) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn evicts_the_least_recently_pushed_version() {
        let s = ProfileStore::new(1000, 5, 2);
        s.push(0, &profile("1", 1, 1)).unwrap();
        s.push(0, &profile("2", 1, 1)).unwrap();
        s.push(0, &profile("1", 1, 1)).unwrap();
        s.push(0, &profile("3", 1, 1)).unwrap();
        assert!(s.merged("m", "2", 0).unwrap().is_none());
        assert!(s.merged("m", "1", 0).unwrap().is_some());
        assert_eq!(s.latest_version("m").as_deref(), Some("3"));
    }
}
