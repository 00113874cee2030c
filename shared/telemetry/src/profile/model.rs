//! [`ModelProfile`]: everything a worker summarizes about one model version over one window:
//! request and error counts, an HDR latency histogram, one [`FeatureProfile`] per flattened
//! input feature and one [`OutputProfile`] per output.
//!
//! The observe methods are the worker's hot path: they check shapes once per call, then fold
//! values in place; the only allocations are inside the KLL sketches' compactions (see the
//! module doc of [`crate::profile`]) and when a categorical feature admits a new category.

use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::feature::{FeatureKind, FeatureProfile};
use super::outlier::OutlierModel;
use super::{ProfileError, SketchConfig};

/// Latency histogram range: 1 µs to 1 hour (larger latencies are clamped to 1 hour).
pub const LATENCY_MAX_MICROS: u64 = 3_600_000_000;
/// Latency histogram precision: 2 significant digits (≤ 1 % relative error per value).
pub const LATENCY_SIGFIG: u8 = 2;

/// A new latency histogram in µs with Kiln's profile bounds (fixed size, ~29 KiB).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, LATENCY_SIGFIG)
        .expect("static histogram bounds are valid")
}

/// What an output tensor carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputKind {
    /// Numeric scores (probabilities, regression values): a quantile sketch.
    #[default]
    Score,
    /// Class labels (INT64 or STRING): a class histogram.
    Label,
}

/// The name and kind of one input feature (flattened: one per tensor element).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSpec {
    /// Feature name, e.g. `"input[3]"`.
    pub name: String,
    /// How it is summarized.
    pub kind: FeatureKind,
}

/// The name and kind of one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    /// Output tensor name.
    pub name: String,
    /// How it is summarized.
    pub kind: OutputKind,
}

/// The shape of a model version's profile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfileSchema {
    /// Flattened input features, in row order.
    pub features: Vec<FeatureSpec>,
    /// Outputs, in the model's output order.
    pub outputs: Vec<OutputSpec>,
    /// Sketch parameters.
    pub config: SketchConfig,
}

impl ProfileSchema {
    /// `n` numeric features named `{prefix}[i]` and no outputs.
    pub fn numeric(prefix: &str, n: usize) -> Self {
        Self {
            features: (0..n)
                .map(|i| FeatureSpec {
                    name: format!("{prefix}[{i}]"),
                    kind: FeatureKind::Numeric,
                })
                .collect(),
            ..Self::default()
        }
    }
}

/// The distribution of one model output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputProfile {
    /// Score or label.
    pub kind: OutputKind,
    /// The distribution (numeric for scores, categorical for labels).
    pub profile: FeatureProfile,
}

/// The traffic profile of one model version over one window.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    /// Model name.
    pub model: String,
    /// Model version.
    pub version: String,
    /// Requests answered (OK or not).
    pub request_count: u64,
    /// Requests answered with an error.
    pub error_count: u64,
    /// Rows (batch items) observed.
    pub row_count: u64,
    /// Rows scored against an [`OutlierModel`] ([`ModelProfile::score_batch`]); rows with a
    /// non-finite value are not scored. Adds up in [`ModelProfile::merge`]. The denominator
    /// of the outlier rate (see [`ModelProfile::outlier_rate`]).
    pub scored_rows: u64,
    /// Scored rows whose d² exceeded the model's threshold. Adds up in merges.
    pub outlier_count: u64,
    /// Reference profiles: the outlier model fitted on the reference rows (never merged).
    pub(crate) outlier: Option<Arc<OutlierModel>>,
    pub(crate) latency: Histogram<u64>,
    pub(crate) features: Vec<FeatureProfile>,
    pub(crate) outputs: Vec<OutputProfile>,
}

impl ModelProfile {
    /// An empty profile of `model`/`version` shaped by `schema`.
    pub fn new(
        model: impl Into<String>,
        version: impl Into<String>,
        schema: &ProfileSchema,
    ) -> Result<Self, ProfileError> {
        let features = schema
            .features
            .iter()
            .map(|f| FeatureProfile::new(f.name.clone(), f.kind, &schema.config))
            .collect::<Result<_, _>>()?;
        let outputs = schema
            .outputs
            .iter()
            .map(|o| {
                let kind = match o.kind {
                    OutputKind::Score => FeatureKind::Numeric,
                    OutputKind::Label => FeatureKind::Categorical,
                };
                Ok(OutputProfile {
                    kind: o.kind,
                    profile: FeatureProfile::new(o.name.clone(), kind, &schema.config)?,
                })
            })
            .collect::<Result<_, ProfileError>>()?;
        Ok(Self {
            model: model.into(),
            version: version.into(),
            request_count: 0,
            error_count: 0,
            row_count: 0,
            scored_rows: 0,
            outlier_count: 0,
            outlier: None,
            latency: latency_histogram(),
            features,
            outputs,
        })
    }

    /// An empty profile with the same model, version, features, outputs, configuration and
    /// outlier model (scored and outlier counts zeroed).
    pub fn empty_like(&self) -> Self {
        let mut p = self.clone();
        p.reset();
        p
    }

    /// Empties every count, sketch and histogram, keeping the shape.
    pub fn reset(&mut self) {
        self.request_count = 0;
        self.error_count = 0;
        self.row_count = 0;
        self.scored_rows = 0;
        self.outlier_count = 0;
        self.latency.reset();
        self.features.iter_mut().for_each(FeatureProfile::reset);
        self.outputs.iter_mut().for_each(|o| o.profile.reset());
    }

    /// Records one answered request: whether it failed, and the latency of one that did not.
    /// Failures count only as errors: fast refusals (a full queue, bad input) would otherwise
    /// pull the latency percentiles down, and a p99 SLO could hide a breach behind them.
    pub fn record_request(&mut self, latency: Duration, ok: bool) {
        self.request_count += 1;
        if !ok {
            self.error_count += 1;
            return;
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
    }

    /// Folds in one row of features (`row.len()` must be the feature count).
    #[inline]
    pub fn observe_row(&mut self, row: &[f64]) -> Result<(), ProfileError> {
        self.check_width(row.len())?;
        self.row_count += 1;
        for (f, v) in self.features.iter_mut().zip(row) {
            f.observe(*v);
        }
        Ok(())
    }

    /// Folds in `rows` rows of `cols` features, row-major (`data.len() == rows * cols`).
    pub fn observe_batch(
        &mut self,
        rows: usize,
        cols: usize,
        data: &[f32],
    ) -> Result<(), ProfileError> {
        self.check_width(cols)?;
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(ProfileError::Shape(format!(
                "{rows} rows × {cols} features need {} values, got {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        if cols == 0 {
            self.row_count += rows as u64;
            return Ok(());
        }
        self.row_count += rows as u64;
        for row in data.chunks_exact(cols) {
            for (f, v) in self.features.iter_mut().zip(row) {
                f.observe_f32(*v);
            }
        }
        Ok(())
    }

    /// Scores `rows` rows of `cols` features (row-major, as [`ModelProfile::observe_batch`])
    /// against `model` and adds them to [`ModelProfile::scored_rows()`] and
    /// [`ModelProfile::outlier_count()`]. Costs `rank × cols` multiply-adds per row (≤ cols²).
    pub fn score_batch(
        &mut self,
        model: &OutlierModel,
        rows: usize,
        cols: usize,
        data: &[f32],
    ) -> Result<(), ProfileError> {
        let (scored, outliers) = model.count_outliers(rows, cols, data)?;
        self.scored_rows += scored;
        self.outlier_count += outliers;
        Ok(())
    }

    /// Rows scored against an outlier model (the public reading of
    /// the `scored_rows` field, e.g. for metrics).
    pub fn scored_rows(&self) -> u64 {
        self.scored_rows
    }

    /// Scored rows that were outliers (the public reading of the `outlier_count` field).
    pub fn outlier_count(&self) -> u64 {
        self.outlier_count
    }

    /// `outlier_count / scored_rows`, `None` when no row was scored.
    pub fn outlier_rate(&self) -> Option<f64> {
        (self.scored_rows > 0).then(|| self.outlier_count as f64 / self.scored_rows as f64)
    }

    /// The outlier model of a reference profile (`None` for live profiles, or a reference built
    /// before outlier models existed).
    pub fn outlier_model(&self) -> Option<&Arc<OutlierModel>> {
        self.outlier.as_ref()
    }

    /// Attaches (or removes) the reference outlier model.
    pub fn set_outlier_model(&mut self, model: Option<Arc<OutlierModel>>) {
        self.outlier = model;
    }

    /// Folds in score values of output `output` (all elements of the output tensor).
    pub fn observe_scores(&mut self, output: usize, scores: &[f32]) -> Result<(), ProfileError> {
        let p = self.output_mut(output, OutputKind::Score)?;
        scores.iter().for_each(|v| p.observe_f32(*v));
        Ok(())
    }

    /// Folds in integer class labels of output `output`.
    pub fn observe_labels(&mut self, output: usize, labels: &[i64]) -> Result<(), ProfileError> {
        let p = self.output_mut(output, OutputKind::Label)?;
        labels.iter().for_each(|v| p.observe_int(*v));
        Ok(())
    }

    /// Folds in string class labels of output `output`.
    pub fn observe_label_strs<'a>(
        &mut self,
        output: usize,
        labels: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ProfileError> {
        let p = self.output_mut(output, OutputKind::Label)?;
        labels.into_iter().for_each(|l| p.observe_label(l));
        Ok(())
    }

    fn output_mut(
        &mut self,
        output: usize,
        kind: OutputKind,
    ) -> Result<&mut FeatureProfile, ProfileError> {
        let n = self.outputs.len();
        let o = self
            .outputs
            .get_mut(output)
            .ok_or_else(|| ProfileError::Shape(format!("output {output} of {n}")))?;
        if o.kind != kind {
            return Err(ProfileError::Shape(format!(
                "output {:?} is {:?}, not {kind:?}",
                o.profile.name(),
                o.kind
            )));
        }
        Ok(&mut o.profile)
    }

    fn check_width(&self, cols: usize) -> Result<(), ProfileError> {
        if cols != self.features.len() {
            return Err(ProfileError::Shape(format!(
                "row has {cols} features, profile has {}",
                self.features.len()
            )));
        }
        Ok(())
    }

    /// Folds in `other`: same model, version, features and outputs required. Counts add up
    /// (scored and outlier rows included); the outlier model is a fitted reference artefact and
    /// is not merged: `self`'s is kept (`other`'s when `self` has none).
    pub fn merge(&mut self, other: &ModelProfile) -> Result<(), ProfileError> {
        if self.model != other.model || self.version != other.version {
            return Err(ProfileError::Mismatch(format!(
                "cannot merge {}/{} into {}/{}",
                other.model, other.version, self.model, self.version
            )));
        }
        if self.features.len() != other.features.len() || self.outputs.len() != other.outputs.len()
        {
            return Err(ProfileError::Mismatch(format!(
                "shape {}×{} vs {}×{} (features × outputs)",
                self.features.len(),
                self.outputs.len(),
                other.features.len(),
                other.outputs.len()
            )));
        }
        if self
            .outputs
            .iter()
            .zip(&other.outputs)
            .any(|(a, b)| a.kind != b.kind)
        {
            return Err(ProfileError::Mismatch("output kinds differ".into()));
        }
        // Validate everything before mutating so a failed merge leaves `self` unchanged.
        if let Some((a, b)) = self
            .features
            .iter()
            .zip(&other.features)
            .find(|(a, b)| a.kind() != b.kind())
        {
            return Err(ProfileError::Mismatch(format!(
                "feature {:?} is {:?} here, {:?} there",
                a.name(),
                a.kind(),
                b.kind()
            )));
        }
        self.latency
            .add(&other.latency)
            .map_err(|e| ProfileError::Merge(format!("latency histogram: {e:?}")))?;
        self.request_count += other.request_count;
        self.error_count += other.error_count;
        self.row_count += other.row_count;
        self.scored_rows += other.scored_rows;
        self.outlier_count += other.outlier_count;
        if self.outlier.is_none() {
            self.outlier.clone_from(&other.outlier);
        }
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            a.merge(b)?;
        }
        for (a, b) in self.outputs.iter_mut().zip(&other.outputs) {
            a.profile.merge(&b.profile)?;
        }
        Ok(())
    }

    /// Latency of the successful requests, in µs.
    pub fn latency(&self) -> &Histogram<u64> {
        &self.latency
    }

    /// Input feature profiles, in row order.
    pub fn features(&self) -> &[FeatureProfile] {
        &self.features
    }

    /// Output profiles, in output order.
    pub fn outputs(&self) -> &[OutputProfile] {
        &self.outputs
    }

    /// Memory held, estimated: what a store of profiles budgets with. The sketches dominate
    /// (4 bytes per retained item), then the latency histogram's counts.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.model.len()
            + self.version.len()
            + self.latency.distinct_values() * std::mem::size_of::<u64>()
            + self
                .features
                .iter()
                .map(FeatureProfile::heap_bytes)
                .sum::<usize>()
            + self
                .outputs
                .iter()
                .map(|o| o.profile.heap_bytes())
                .sum::<usize>()
    }

    /// The approximate `q`-quantile of feature `feature` (numeric features).
    pub fn quantile(&self, feature: usize, q: f64) -> Option<f64> {
        self.features.get(feature)?.quantile(q)
    }

    /// The approximate fraction of values of feature `feature` that are `<= x`.
    pub fn cdf(&self, feature: usize, x: f64) -> Option<f64> {
        self.features.get(feature)?.cdf(x)
    }
}
