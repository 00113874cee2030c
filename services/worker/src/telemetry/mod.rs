//! Traffic profiles (DESIGN.md §7): per loaded model version, a [`ProfileWindow`] of
//! [`ModelProfile`](kiln_telemetry::profile::ModelProfile)s (input features flattened per row,
//! label outputs as class histograms, score outputs as sketches, request and error counts, HDR
//! latency), pushed every window to the monitor(s) over `kiln.v1.Telemetry/PushProfile`.
//!
//! Three parts, so that serving never pays for sketching:
//! - the request path ([`crate::infer`]) copies a request's rows into its version's bounded
//!   buffer ([`profiler`]); it never sketches and never waits (a full buffer drops and counts);
//! - one profiling thread per worker (`kiln-telemetry`) folds every buffer into its window
//!   every [`FOLD_EVERY`] and closes windows as they end (windows are aligned to the epoch, so
//!   every worker's line up);
//! - one push task ([`push`]) sends the closed windows to every monitor, as one
//!   [`ProfileBatch`] per window; failures back off and never touch serving.
//!
//! Memory is bounded: per version, `buffer_rows` rows and `buffer_bytes` bytes waiting, at
//! most [`kiln_telemetry::profile::MAX_FEATURES`] input features, two request tallies (~29 KiB
//! each) and at most [`MAX_CLOSED`] + 1 profiles; per monitor at most [`MAX_CLOSED`] batches
//! waiting to be pushed.
//!
//! Outliers: when the package's `reference.profile.pb` has an outlier model ([`outlier`]),
//! the profiling thread scores every profiled row against it (d² = (x − μ)ᵀ Σ⁺ (x − μ), about
//! `features²` multiply-adds per row) and counts the rows beyond its threshold in the
//! profile's `scored_rows` / `outlier_count`.
//!
//! Metrics: `kiln_telemetry_samples_dropped_total{model,version}`,
//! `kiln_telemetry_pushes_total{result}` (`ok`, `error`).
//!
//! [`ProfileWindow`]: kiln_telemetry::profile::ProfileWindow

pub mod budget;
pub mod outlier;
pub mod profiler;
pub mod push;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use kiln_model::Manifest;
use kiln_proto::kiln::v1 as pb;
use kiln_telemetry::profile::OutlierModel;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::metrics::ModelLabels;
pub use outlier::{load_outlier_model, read_outlier_model};
pub use profiler::{ProfilerSettings, VersionProfiler, unix_ms};

/// Closed windows kept per version (and batches per monitor) until pushed.
pub const MAX_CLOSED: usize = 12;
/// How often the profiling thread folds the buffers.
pub const FOLD_EVERY: Duration = Duration::from_millis(100);

/// Labels of `kiln_telemetry_pushes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The worker's telemetry: its settings, every profiled version and the metric families.
pub struct Telemetry {
    worker_id: String,
    settings: ProfilerSettings,
    versions: Mutex<Vec<Arc<VersionProfiler>>>,
    dropped: Family<ModelLabels, Counter>,
    pushes: Family<PushLabels, Counter>,
}

impl Telemetry {
    /// Telemetry of worker `worker_id`, its metric families registered in `registry`.
    pub fn new(
        worker_id: &str,
        settings: ProfilerSettings,
        registry: &Arc<Mutex<Registry>>,
    ) -> Arc<Self> {
        let t = Self {
            worker_id: worker_id.to_string(),
            settings,
            versions: Mutex::new(Vec::new()),
            dropped: Family::default(),
            pushes: Family::default(),
        };
        let mut r = registry.lock().unwrap_or_else(|p| p.into_inner());
        r.register(
            "kiln_telemetry_samples_dropped",
            "Requests whose rows were not profiled because the profiling buffer was full",
            t.dropped.clone(),
        );
        r.register(
            "kiln_telemetry_pushes",
            "PushProfile calls to monitors, by result",
            t.pushes.clone(),
        );
        Arc::new(t)
    }

    /// The window length.
    pub fn period(&self) -> Duration {
        self.settings.period
    }

    /// Starts profiling a loaded version (`None` if its profile cannot be built), scoring its
    /// rows against `outlier` (the package's reference outlier model) when it fits the layout.
    pub fn register(
        &self,
        manifest: &Manifest,
        outlier: Option<Arc<OutlierModel>>,
    ) -> Option<Arc<VersionProfiler>> {
        let labels = ModelLabels {
            model: manifest.name.clone(),
            version: manifest.version.clone(),
        };
        let dropped = self.dropped.get_or_create_owned(&labels);
        match VersionProfiler::new(manifest, self.settings, dropped) {
            Ok(p) => {
                let p = p.with_outlier_model(outlier);
                let p = Arc::new(p);
                self.lock().push(p.clone());
                Some(p)
            }
            Err(e) => {
                tracing::warn!(model = manifest.name, version = manifest.version, error = %e, "not profiling");
                None
            }
        }
    }

    /// A version was unloaded: its last window closes at the next fold and is pushed.
    pub fn retire(&self, model: &str, version: &str) {
        for p in self.lock().iter() {
            if p.model() == model && p.version() == version {
                p.retire();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<VersionProfiler>>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds every buffer into its window and closes the windows that ended (all of them when
    /// `force`). Blocking CPU work: the profiling thread, or `spawn_blocking`.
    pub fn fold_all(&self, force: bool) {
        let versions = self.lock().clone();
        let (mut scratch, mut rows) = (Vec::new(), Vec::new());
        let now = unix_ms();
        for p in versions {
            p.fold(now, force, &mut scratch, &mut rows);
        }
    }

    /// Takes every closed window, as one batch per window (profiles with no request left
    /// out), oldest first; forgets the versions that are finished. Blocking (encodes sketches).
    pub fn take_batches(&self) -> Vec<pb::ProfileBatch> {
        let versions = self.lock().clone();
        let mut by_window: BTreeMap<(u64, u64), Vec<pb::ModelProfile>> = BTreeMap::new();
        for p in &versions {
            for w in p.take_closed() {
                if w.profile.request_count == 0 {
                    continue;
                }
                by_window
                    .entry((w.start_unix_ms, w.end_unix_ms))
                    .or_default()
                    .push(pb::ModelProfile::from(&w.profile));
            }
        }
        let done: Vec<_> = versions.iter().filter(|p| p.finished()).collect();
        if !done.is_empty() {
            self.lock().retain(|p| !p.finished());
            for p in done {
                // Another load of the same version may still use the series.
                if !self
                    .lock()
                    .iter()
                    .any(|q| q.model() == p.model() && q.version() == p.version())
                {
                    self.dropped.remove(&ModelLabels {
                        model: p.model().to_string(),
                        version: p.version().to_string(),
                    });
                }
            }
        }
        by_window
            .into_iter()
            .map(|((start, end), profiles)| pb::ProfileBatch {
                worker_id: self.worker_id.clone(),
                window_start_unix_ms: start,
                window_end_unix_ms: end,
                profiles,
            })
            .collect()
    }

    /// Counts one PushProfile call.
    pub fn count_push(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.pushes.get_or_create(&PushLabels { result }).inc();
    }
}

/// The profiling thread; stops (after one last fold) when dropped or [`ProfilingThread::stop`]ped.
pub struct ProfilingThread {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ProfilingThread {
    /// Starts the thread folding `telemetry`'s buffers every [`FOLD_EVERY`].
    pub fn start(telemetry: Arc<Telemetry>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("kiln-telemetry".into())
            .spawn(move || {
                crate::priority::background();
                while !flag.load(Ordering::Acquire) {
                    telemetry.fold_all(false);
                    std::thread::park_timeout(FOLD_EVERY);
                }
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for ProfilingThread {
    fn drop(&mut self) {
        self.halt();
    }
}
