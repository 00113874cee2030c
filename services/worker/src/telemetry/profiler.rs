//! [`VersionProfiler`]: the traffic profile of one loaded model version, split between the
//! request path and the profiling thread.
//!
//! Guarantees:
//! - the request path never sketches and never waits for the profiling thread: it records the
//!   request's outcome and latency in a small tally (a counter and an HDR histogram record), and
//!   copies its FP32 input rows (and its outputs) into a [`Capture`] pushed into a bounded
//!   buffer, each under a lock held only for that;
//! - the buffer holds at most `buffer_rows` rows and `buffer_bytes` bytes of copies (wide
//!   outputs can make one row large): a request whose rows do not fit has them
//!   dropped and counted in `kiln_telemetry_samples_dropped_total{model,version}`; its count,
//!   outcome and latency are kept all the same, so request and error counts are exact;
//! - with a sample rate below 1, the rows of every ⌈1/rate⌉-th request or so (deterministically,
//!   by a counter) are copied, and at most `max_rows_per_sec` rows a second ([`RowBudget`]);
//!   request and error counts cover every request, latency every successful one;
//! - [`VersionProfiler::fold`] (profiling thread, or shutdown's flush) moves the buffer out and
//!   folds it into the current window of a [`ProfileWindow`] that keeps at most `max_closed`
//!   closed windows.
//!
//! What is profiled: each FP32 input with fixed per-row dims, flattened per row in manifest
//! order (`input[0]`, ..., or `input` for a one-element input); each INT64/INT32/BYTES output as
//! a class histogram and each FP32/FP64 output as a score sketch (all its elements). Other
//! inputs and outputs are left out of the schema.
//!
//! Outliers: with an outlier model of the package's reference ([`VersionProfiler::with_outlier_model`],
//! same feature count as the layout), the fold scores each profiled row against it (on the
//! profiling thread, never on the request path) into the profile's `scored_rows` and
//! `outlier_count`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kiln_model::{HostData, Manifest};
use kiln_telemetry::profile::{
    ModelProfile, OutlierModel, OutputKind, ProfileSchema, ProfileWindow, SketchConfig, TensorSig,
};
use prometheus_client::metrics::counter::Counter;

use super::budget::RowBudget;
use crate::executor::Tensors;

/// The copied data of one profiled request.
#[derive(Debug, Default)]
pub struct Capture {
    rows: usize,
    /// One vector per profiled input (`rows × elements`), in schema order.
    inputs: Vec<Vec<f32>>,
    /// One entry per profiled output, in schema order (`None`: not captured).
    outputs: Vec<Option<OutputData>>,
}

#[derive(Debug)]
enum OutputData {
    Labels(Vec<i64>),
    Strings(Vec<String>),
    Scores(Vec<f32>),
}

impl Capture {
    /// Bytes of the copies.
    fn bytes(&self) -> usize {
        let inputs: usize = self.inputs.iter().map(|v| v.len() * 4).sum();
        let outputs: usize = self
            .outputs
            .iter()
            .flatten()
            .map(|o| match o {
                OutputData::Labels(v) => v.len() * 8,
                OutputData::Strings(v) => v.iter().map(|s| s.len() + 24).sum(),
                OutputData::Scores(v) => v.len() * 4,
            })
            .sum();
        inputs + outputs
    }
}

#[derive(Default)]
struct Pending {
    captures: Vec<Capture>,
    rows: usize,
    bytes: usize,
}

/// Which tensors of the manifest are profiled.
#[derive(Debug, Clone)]
struct Layout {
    /// (manifest input index, elements per row)
    inputs: Vec<(usize, usize)>,
    /// (manifest output index, kind)
    outputs: Vec<(usize, OutputKind)>,
    cols: usize,
}

fn layout(manifest: &Manifest, config: SketchConfig) -> (Layout, ProfileSchema) {
    fn sig(t: &kiln_model::TensorSpec) -> TensorSig<'_> {
        TensorSig {
            name: &t.name,
            datatype: &t.datatype,
            dims: &t.dims,
        }
    }
    let inputs: Vec<TensorSig<'_>> = manifest.inputs.iter().map(sig).collect();
    let outputs: Vec<TensorSig<'_>> = manifest.outputs.iter().map(sig).collect();
    let l = kiln_telemetry::profile::layout(&inputs, &outputs, config);
    let cols = l.schema.features.len();
    (
        Layout {
            inputs: l.inputs,
            outputs: l.outputs,
            cols,
        },
        l.schema,
    )
}

/// How a version is profiled.
#[derive(Debug, Clone, Copy)]
pub struct ProfilerSettings {
    /// Window length.
    pub period: Duration,
    /// Closed windows kept until pushed.
    pub max_closed: usize,
    /// Fraction of requests whose rows are copied.
    pub sample_rate: f64,
    /// Most rows profiled per second (0: no cap); see [`RowBudget`].
    pub max_rows_per_sec: u64,
    /// Most rows (and samples) waiting in the buffer.
    pub buffer_rows: usize,
    /// Most bytes of copied rows waiting in the buffer.
    pub buffer_bytes: usize,
}

/// The profile of one model version; see the module docs.
pub struct VersionProfiler {
    model: String,
    version: String,
    layout: Layout,
    sample_rate: f64,
    budget: Option<RowBudget>,
    bound: usize,
    max_bytes: usize,
    seen: AtomicU64,
    pending: Mutex<Pending>,
    /// Requests and latency since the last fold: a profile without features or outputs.
    tally: Mutex<ModelProfile>,
    /// The fold's spare tally (swapped with `tally`).
    spare: Mutex<ModelProfile>,
    dropped: Counter,
    window: Mutex<ProfileWindow>,
    /// Unloaded: the next fold closes the current window early.
    retired: AtomicBool,
    /// Retired and folded: nothing more will arrive.
    finished: AtomicBool,
    /// The reference outlier model rows are scored against.
    outlier: Option<Arc<OutlierModel>>,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VersionProfiler {
    /// A profiler of the manifest's model version. `dropped` counts its dropped samples.
    pub fn new(
        manifest: &Manifest,
        settings: ProfilerSettings,
        dropped: Counter,
    ) -> Result<Self, kiln_telemetry::profile::ProfileError> {
        let (layout, schema) = layout(manifest, SketchConfig::default());
        let empty = ModelProfile::new(&manifest.name, &manifest.version, &schema)?;
        let tally = ModelProfile::new("", "", &ProfileSchema::default())?;
        let window = ProfileWindow::new(empty, settings.period, settings.max_closed, unix_ms());
        Ok(Self {
            model: manifest.name.clone(),
            version: manifest.version.clone(),
            layout,
            sample_rate: settings.sample_rate.clamp(0.0, 1.0),
            budget: RowBudget::new(settings.max_rows_per_sec),
            bound: settings.buffer_rows,
            max_bytes: settings.buffer_bytes,
            seen: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            spare: Mutex::new(tally.clone()),
            tally: Mutex::new(tally),
            dropped,
            window: Mutex::new(window),
            retired: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            outlier: None,
        })
    }

    /// Scores every profiled row against `model` (the package's reference outlier model); a
    /// model of another width than the profiled rows is ignored (logged).
    pub fn with_outlier_model(mut self, model: Option<Arc<OutlierModel>>) -> Self {
        self.outlier = model.filter(|m| {
            let fits = m.features() == self.layout.cols;
            if !fits {
                tracing::warn!(
                    model = self.model,
                    version = self.version,
                    outlier_features = m.features(),
                    profiled_features = self.layout.cols,
                    "the reference outlier model does not fit the profiled rows; not scoring"
                );
            }
            fits
        });
        self
    }

    /// Whether profiled rows are scored for outliers.
    pub fn scores_outliers(&self) -> bool {
        self.outlier.is_some()
    }

    /// Model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Model version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Flattened input features profiled per row.
    pub fn feature_count(&self) -> usize {
        self.layout.cols
    }

    /// Request path: copies the profiled inputs of a request of `rows` rows, or `None` when this
    /// request is not sampled (or has nothing to profile).
    pub fn capture_inputs(&self, inputs: &Tensors, rows: usize) -> Option<Capture> {
        if self.layout.inputs.is_empty() && self.layout.outputs.is_empty() {
            return None;
        }
        if self.sample_rate < 1.0 {
            let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
            if ((n + 1.0) * self.sample_rate).floor() <= (n * self.sample_rate).floor() {
                return None;
            }
        }
        if let Some(budget) = &self.budget
            && !budget.take(rows)
        {
            return None;
        }
        let mut copied = Vec::with_capacity(self.layout.inputs.len());
        for (index, per_row) in &self.layout.inputs {
            match inputs.get(*index).map(|(_, t)| &t.data) {
                Some(HostData::F32(v)) if v.len() == rows * per_row => copied.push(v.clone()),
                _ => return None, // not the manifest's shape: nothing sensible to profile
            }
        }
        Some(Capture {
            rows,
            inputs: copied,
            outputs: Vec::new(),
        })
    }

    /// Request path: copies the profiled outputs (in manifest order) into `capture`.
    pub fn capture_outputs(&self, capture: &mut Capture, outputs: &Tensors) {
        capture.outputs = self
            .layout
            .outputs
            .iter()
            .map(|(index, kind)| {
                let data = &outputs.get(*index)?.1.data;
                Some(match (kind, data) {
                    (OutputKind::Label, HostData::I64(v)) => OutputData::Labels(v.clone()),
                    (OutputKind::Label, HostData::I32(v)) => {
                        OutputData::Labels(v.iter().map(|x| i64::from(*x)).collect())
                    }
                    (OutputKind::Label, HostData::Bytes(v)) => OutputData::Strings(
                        v.iter()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .collect(),
                    ),
                    (OutputKind::Score, HostData::F32(v)) => OutputData::Scores(v.clone()),
                    (OutputKind::Score, HostData::F64(v)) => {
                        OutputData::Scores(v.iter().map(|x| *x as f32).collect())
                    }
                    _ => return None,
                })
            })
            .collect();
    }

    /// Request path: hands an answered request to the profiling thread; never waits for it.
    /// Returns false when the request's rows were dropped (buffer full).
    pub fn record(&self, latency: Duration, ok: bool, capture: Option<Capture>) -> bool {
        lock(&self.tally).record_request(latency, ok);
        let Some(capture) = capture else {
            return true;
        };
        let bytes = capture.bytes();
        let mut pending = lock(&self.pending);
        if pending.rows + capture.rows > self.bound || pending.bytes + bytes > self.max_bytes {
            drop(pending);
            drop(capture);
            self.dropped.inc();
            return false;
        }
        pending.rows += capture.rows;
        pending.bytes += bytes;
        pending.captures.push(capture);
        true
    }

    /// Rows waiting in the buffer now.
    pub fn pending_rows(&self) -> usize {
        lock(&self.pending).rows
    }

    /// Marks the version unloaded: the next fold closes its window early.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Whether the version is retired and its last window closed.
    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// Profiling thread: folds the buffered requests into the current window, then closes it
    /// if `now_ms` is past its end, or at once when `force` (shutdown flush) or retired.
    /// `scratch` and `rows` are reusable buffers.
    pub fn fold(&self, now_ms: u64, force: bool, scratch: &mut Vec<Capture>, rows: &mut Vec<f32>) {
        let retired = self.retired.load(Ordering::Acquire);
        {
            let mut pending = lock(&self.pending);
            std::mem::swap(&mut pending.captures, scratch);
            pending.rows = 0;
            pending.bytes = 0;
        }
        let mut spare = lock(&self.spare);
        std::mem::swap(&mut *lock(&self.tally), &mut *spare);
        let mut window = lock(&self.window);
        let profile = window.current_mut();
        // The tally's histogram holds the successes' latencies; failures are only counted.
        for v in spare.latency().iter_recorded() {
            let latency = Duration::from_micros(v.value_iterated_to());
            for _ in 0..v.count_at_value() {
                profile.record_request(latency, true);
            }
        }
        profile.request_count += spare.error_count;
        profile.error_count += spare.error_count;
        spare.reset();
        drop(spare);
        for capture in scratch.drain(..) {
            self.observe(profile, capture, rows);
        }
        if force || retired {
            let end = window.start_unix_ms() + window.period().as_millis() as u64;
            window.roll(now_ms.max(end));
        } else {
            window.roll(now_ms);
        }
        if retired {
            self.finished.store(true, Ordering::Release);
        }
    }

    fn observe(&self, profile: &mut ModelProfile, c: Capture, buf: &mut Vec<f32>) {
        let cols = self.layout.cols;
        let rows: &[f32] = match c.inputs.as_slice() {
            [] => &[],
            [only] => only,
            many => {
                buf.clear();
                for r in 0..c.rows {
                    for (v, (_, per_row)) in many.iter().zip(&self.layout.inputs) {
                        buf.extend_from_slice(&v[r * per_row..(r + 1) * per_row]);
                    }
                }
                buf
            }
        };
        let width = if c.inputs.is_empty() { 0 } else { cols };
        let mut result = profile.observe_batch(c.rows, width, rows);
        if let (Ok(()), Some(model), true) = (&result, &self.outlier, width > 0) {
            result = profile.score_batch(model, c.rows, width, rows);
        }
        if let Err(e) = result {
            tracing::debug!(model = self.model, version = self.version, error = %e, "rows not profiled");
        }
        for (i, data) in c.outputs.iter().enumerate() {
            let result = match data {
                Some(OutputData::Labels(v)) => profile.observe_labels(i, v),
                Some(OutputData::Strings(v)) => {
                    profile.observe_label_strs(i, v.iter().map(String::as_str))
                }
                Some(OutputData::Scores(v)) => profile.observe_scores(i, v),
                None => Ok(()),
            };
            if let Err(e) = result {
                tracing::debug!(model = self.model, version = self.version, error = %e, "output not profiled");
            }
        }
    }

    /// Removes the closed windows (oldest first) as `(start, end, profile)`.
    pub fn take_closed(&self) -> Vec<kiln_telemetry::profile::ClosedWindow> {
        lock(&self.window).drain_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_model::HostTensor;

    fn manifest() -> Manifest {
        Manifest::read(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/digits/1"),
        )
        .unwrap()
    }

    fn settings(buffer_rows: usize, sample_rate: f64) -> ProfilerSettings {
        ProfilerSettings {
            period: Duration::from_secs(1),
            max_closed: 4,
            sample_rate,
            max_rows_per_sec: 0,
            buffer_rows,
            buffer_bytes: usize::MAX,
        }
    }

    fn inputs(rows: usize) -> Tensors {
        vec![(
            "input".into(),
            HostTensor {
                shape: vec![rows, 64],
                data: HostData::F32((0..rows * 64).map(|i| (i % 64) as f32).collect()),
            },
        )]
    }

    #[test]
    fn a_full_buffer_drops_and_counts_without_waiting() {
        let dropped = Counter::default();
        let p = VersionProfiler::new(&manifest(), settings(5, 1.0), dropped.clone()).unwrap();
        assert_eq!(p.feature_count(), 64);
        let c = p.capture_inputs(&inputs(3), 3);
        assert!(p.record(Duration::from_millis(1), true, c));
        // 3 + 3 > 5: the rows go at once, the request is still counted.
        let start = std::time::Instant::now();
        for _ in 0..100 {
            let c = p.capture_inputs(&inputs(3), 3);
            assert!(!p.record(Duration::from_millis(1), true, c));
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(dropped.get(), 100);
        assert_eq!(p.pending_rows(), 3);
        for _ in 0..3 {
            p.record(Duration::from_millis(2), false, None);
        }

        let (mut scratch, mut rows) = (Vec::new(), Vec::new());
        p.fold(unix_ms(), true, &mut scratch, &mut rows);
        let closed = p.take_closed();
        assert_eq!(closed.len(), 1);
        let profile = &closed[0].profile;
        assert_eq!(profile.request_count, 104);
        assert_eq!(profile.error_count, 3);
        assert_eq!(profile.row_count, 3);
        assert_eq!(profile.latency().len(), 101, "the successes");
        assert_eq!(p.pending_rows(), 0);
    }

    #[test]
    fn the_buffer_is_bounded_in_bytes_too() {
        let dropped = Counter::default();
        let mut bounded = settings(1_000_000, 1.0);
        // Two digits rows (64 features × 4 bytes each) fit, a third does not.
        bounded.buffer_bytes = 2 * 64 * 4 + 100;
        let p = VersionProfiler::new(&manifest(), bounded, dropped.clone()).unwrap();
        let c = p.capture_inputs(&inputs(2), 2);
        assert!(p.record(Duration::from_millis(1), true, c));
        let c = p.capture_inputs(&inputs(1), 1);
        assert!(
            !p.record(Duration::from_millis(1), true, c),
            "over the bytes"
        );
        assert_eq!((p.pending_rows(), dropped.get()), (2, 1));
        let (mut scratch, mut rows) = (Vec::new(), Vec::new());
        p.fold(unix_ms(), false, &mut scratch, &mut rows);
        let c = p.capture_inputs(&inputs(1), 1);
        assert!(
            p.record(Duration::from_millis(1), true, c),
            "room again after a fold"
        );
    }

    #[test]
    fn far_away_rows_are_counted_as_outliers() {
        let fit = kiln_telemetry::profile::OutlierFit {
            threshold: 112.3,
            quantile: 0.999,
            ridge: 0.0,
            count: 100,
        };
        // μ = 0, W = I: d² = |x|².
        let identity: Vec<f64> = (0..64 * 64)
            .map(|i| if i % 65 == 0 { 1.0 } else { 0.0 })
            .collect();
        let model = Arc::new(OutlierModel::full(vec![0.0; 64], identity, fit).unwrap());
        let wrong = Arc::new(OutlierModel::full(vec![0.0; 2], vec![1.0, 0.0], fit).unwrap());
        let p = VersionProfiler::new(&manifest(), settings(1000, 1.0), Counter::default())
            .unwrap()
            .with_outlier_model(Some(wrong));
        assert!(!p.scores_outliers(), "a model of another width is ignored");
        let p = p.with_outlier_model(Some(model));
        assert!(p.scores_outliers());
        // 3 rows at |x|² = Σ j² (far), 2 rows of zeros and 1 row with one value of 10 (near),
        // 1 row with a NaN (not scored).
        let c = p.capture_inputs(&inputs(3), 3);
        p.record(Duration::from_millis(1), true, c);
        let mut near = inputs(4);
        if let HostData::F32(v) = &mut near[0].1.data {
            v.iter_mut().for_each(|x| *x = 0.0);
            v[64] = 10.0;
            v[3 * 64 + 5] = f32::NAN;
        }
        let c = p.capture_inputs(&near, 4);
        p.record(Duration::from_millis(1), true, c);

        let (mut scratch, mut rows) = (Vec::new(), Vec::new());
        p.fold(unix_ms(), true, &mut scratch, &mut rows);
        let closed = p.take_closed();
        let profile = &closed[0].profile;
        assert_eq!(profile.row_count, 7);
        assert_eq!(profile.scored_rows(), 6);
        assert_eq!(profile.outlier_count(), 3);
        assert_eq!(profile.outlier_rate(), Some(0.5));
    }

    #[test]
    fn sampling_copies_a_fraction_of_the_requests() {
        let p =
            VersionProfiler::new(&manifest(), settings(1000, 0.25), Counter::default()).unwrap();
        let copied = (0..100)
            .filter(|_| p.capture_inputs(&inputs(1), 1).is_some())
            .count();
        assert_eq!(copied, 25);
        let p = VersionProfiler::new(&manifest(), settings(1000, 1.0), Counter::default()).unwrap();
        assert!(p.capture_inputs(&inputs(2), 2).is_some());
        // A shape that does not match the manifest is not profiled.
        assert!(p.capture_inputs(&inputs(2), 3).is_none());
    }
}
