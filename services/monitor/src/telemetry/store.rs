//! The in-memory store of live traffic profiles, keyed by (model, version, window start).
//!
//! Guarantees:
//! - Windows are aligned on the Unix epoch: a push for `[start, end)` lands in the window
//!   starting at `start - start % window_ms`, so pushes of every worker for the same period
//!   merge into one profile (KLL sketches, moments, category counts and HDR histograms merge
//!   without losing their stated accuracy).
//! - Bounded: at most `max_windows` windows per model version (the oldest window goes first; a
//!   push older than every kept window of a full version is dropped), at most `max_versions`
//!   model versions (the least recently pushed version goes first), and at most `max_bytes` of
//!   estimated memory ([`ModelProfile::heap_bytes`]) in all: over it, the oldest windows of the
//!   whole store go first (never the window just pushed to).
//! - A push whose profile does not merge with the window's (different features or outputs) is
//!   refused as a whole and changes nothing.
//!
//! # Memory bound
//!
//! One window holds one merged [`ModelProfile`]: ≤ 29 KiB per numeric feature (KLL k = 1024;
//! a window of ≤ 1024 rows is held exactly, ≤ 8 KiB), ≤ 14 KiB per categorical feature or
//! label output, 26 KiB of HDR latency (see `kiln_telemetry::profile`). The counts alone allow
//! `max_versions × max_windows` of them: with the defaults (64 versions, 60 windows) and a
//! 64-feature model with 2 outputs, ≤ 64 × 60 × 1.9 MiB ≈ 7 GiB. `max_bytes`
//! (`--telemetry-max-bytes`, 1 GiB by default) caps the estimated total whatever the counts; the
//! estimate ([`ModelProfile::heap_bytes`]) counts the retained sketch items, category maps and
//! histogram counts, not allocator slack.

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
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    versions: HashMap<(String, String), Version>,
    /// Push counter: the recency order of versions.
    clock: u64,
    /// Estimated memory of every window held.
    bytes: usize,
}

#[derive(Debug)]
struct Version {
    windows: BTreeMap<u64, ModelProfile>,
    /// Estimated memory of each window (same keys as `windows`).
    sizes: BTreeMap<u64, usize>,
    last_push: u64,
}

impl Version {
    fn bytes(&self) -> usize {
        self.sizes.values().sum()
    }

    /// Re-estimates window `start` after a change; returns (new size, old size).
    fn resize(&mut self, start: u64) -> (usize, usize) {
        let new = self.windows.get(&start).map_or(0, ModelProfile::heap_bytes);
        let old = self.sizes.insert(start, new).unwrap_or(0);
        (new, old)
    }

    /// Drops the oldest window; returns its estimated size.
    fn pop_first(&mut self) -> usize {
        self.windows.pop_first();
        self.sizes.pop_first().map_or(0, |(_, size)| size)
    }

    /// Drops window `start`; returns its estimated size.
    fn remove(&mut self, start: u64) -> usize {
        self.windows.remove(&start);
        self.sizes.remove(&start).unwrap_or(0)
    }
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
            max_bytes: usize::MAX,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The same store, holding at most `max_bytes` of estimated memory in all.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
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
            if let Some(gone) = oldest.and_then(|k| inner.versions.remove(&k)) {
                inner.bytes -= gone.bytes();
            }
        }
        let version = inner
            .versions
            .entry(key.clone())
            .or_insert_with(|| Version {
                windows: BTreeMap::new(),
                sizes: BTreeMap::new(),
                last_push: clock,
            });
        let merged = match version.windows.get_mut(&start) {
            // A merge that fails part-way may still have changed the window: resized below.
            Some(window) => window
                .merge(profile)
                .map_err(|e| Error::InvalidArgument(format!("profile does not merge: {e}"))),
            None => {
                if let Some((_, first)) = version.windows.iter().next() {
                    // Refuse a shape the version's other windows cannot merge with.
                    first.empty_like().merge(profile).map_err(|e| {
                        Error::InvalidArgument(format!("profile does not merge: {e}"))
                    })?;
                }
                version.windows.insert(start, profile.clone());
                Ok(())
            }
        };
        let (added, removed) = version.resize(start);
        let mut freed = removed;
        while version.windows.len() > self.max_windows {
            freed += version.pop_first();
        }
        version.last_push = clock;
        inner.bytes = inner.bytes + added - freed;
        self.shed(&mut inner, &key, start);
        merged
    }

    /// Drops the oldest windows of the store while it holds more than `max_bytes`, never the
    /// window `(key, start)` just pushed to (a window alone over the budget is kept).
    fn shed(&self, inner: &mut Inner, key: &(String, String), start: u64) {
        while inner.bytes > self.max_bytes {
            let oldest = inner
                .versions
                .iter()
                .filter_map(|(k, v)| {
                    let first = v.windows.keys().find(|&&w| k != key || w != start)?;
                    Some((*first, k.clone()))
                })
                .min();
            let Some((first, k)) = oldest else {
                return;
            };
            let version = inner.versions.get_mut(&k).expect("found above");
            inner.bytes -= version.remove(first);
            if version.windows.is_empty() {
                inner.versions.remove(&k);
            }
        }
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

    /// Estimated memory of every window held, bytes.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("profile store lock").bytes
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
    fn a_byte_budget_drops_the_oldest_windows_of_the_store_first() {
        let one = profile("1", 2000, 4).heap_bytes();
        let s = ProfileStore::new(1000, 10, 10).with_max_bytes(3 * one + one / 2);
        s.push(0, &profile("1", 2000, 4)).unwrap();
        s.push(1000, &profile("2", 2000, 4)).unwrap();
        s.push(2000, &profile("1", 2000, 4)).unwrap();
        assert_eq!((s.len(), s.bytes()), ((2, 3), 3 * one));
        // A fourth window goes over: version 1's window at 0 is the oldest of the store.
        s.push(3000, &profile("2", 2000, 4)).unwrap();
        assert_eq!((s.len(), s.bytes()), ((2, 3), 3 * one));
        assert_eq!(s.merged("m", "1", 0).unwrap().unwrap().start_ms, 2000);
        assert_eq!(s.merged("m", "2", 0).unwrap().unwrap().windows, 2);
        // Merging into a window grows it; the oldest other windows make room.
        s.push(3000, &profile("2", 2000, 4)).unwrap();
        assert!(s.bytes() <= 3 * one + one / 2, "{} > budget", s.bytes());
        assert!(s.merged("m", "2", 3000).unwrap().unwrap().profile.row_count == 4000);
        // A late push into a version's oldest window keeps that window and sheds the version's
        // newer ones if nothing older is left.
        let late = ProfileStore::new(1000, 10, 10).with_max_bytes(one + one / 2);
        late.push(1000, &profile("1", 2000, 4)).unwrap();
        late.push(0, &profile("1", 2000, 4)).unwrap();
        assert_eq!((late.len(), late.bytes()), ((1, 1), one));
        assert_eq!(late.merged("m", "1", 0).unwrap().unwrap().start_ms, 0);
        // A window alone over the budget is kept (nothing else to drop).
        let tiny = ProfileStore::new(1000, 10, 10).with_max_bytes(1);
        tiny.push(0, &profile("1", 10, 1)).unwrap();
        tiny.push(1000, &profile("1", 10, 1)).unwrap();
        assert_eq!(tiny.len(), (1, 1));
        assert_eq!(tiny.merged("m", "1", 0).unwrap().unwrap().start_ms, 1000);
        // Evicting a version by count frees its bytes.
        let counted = ProfileStore::new(1000, 10, 1);
        counted.push(0, &profile("1", 10, 1)).unwrap();
        counted.push(0, &profile("2", 10, 1)).unwrap();
        assert_eq!(counted.bytes(), profile("2", 10, 1).heap_bytes());
    }

    #[test]
    fn heap_bytes_grows_with_the_sketches_and_stays_bounded() {
        let small = profile("1", 10, 4).heap_bytes();
        let big = profile("1", 5000, 4).heap_bytes();
        let bigger = profile("1", 50_000, 4).heap_bytes();
        assert!(small < big, "{small} {big}");
        // KLL (k = 1024) retains a bounded number of items: 10x the rows, < 1.5x the memory.
        assert!(bigger < big * 3 / 2, "{big} {bigger}");
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
